"""Every way of steering a model (the nnsight arms, the compiled floor) and the independent raw-hook reference."""
