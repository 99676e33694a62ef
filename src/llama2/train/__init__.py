"""Training: the one loop (`loop.train`) and the recipes that run on it (`recipes.RECIPES`)."""
