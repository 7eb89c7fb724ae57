"""The findings about a user's own steering code (``equiv check``): one module per finding; ``user_run``
generates once for all of them."""
