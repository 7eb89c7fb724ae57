"""The user's own steering code: loaded from its file, told apart by form, and run under observation.

May import observe, arms (the generation settings and the vocabulary), models, config and support. A fault in the
user's code is reported with the user's own traceback lines, never as equiv-bench's.
"""
