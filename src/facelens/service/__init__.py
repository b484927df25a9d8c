"""The REST service and web console: a thin FastAPI shell over the facelens library."""
