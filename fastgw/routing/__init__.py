"""Model routing: public model names → targets (provider + upstream model + timeouts)."""

# No eager imports: the config validator imports ``routing.conditions`` (which depends only
# on ``api``), and ``routing.router`` depends on ``config``.
