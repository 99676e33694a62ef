"""Providers: one interface over every model this project talks to (see `base.Provider`)."""
