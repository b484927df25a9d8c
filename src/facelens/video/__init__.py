"""Cameras: sources → sampled frames → tracked faces → best shots → watchlist alerts."""
