"""Over-the-air updates (TUF-verified, A/B with rollback). Not built yet: see issue 7.

Nothing here runs; the package exists so that the layout of the design card is in place.
"""
