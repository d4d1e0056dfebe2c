"""The API's image models: what each request body may hold (``seed``: the four seed models)."""
