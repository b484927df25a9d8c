"""Galleries: enrolled faces, their metadata and the vector index that searches them."""
