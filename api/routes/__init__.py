"""One module per resource; ``api.main`` assembles them."""
