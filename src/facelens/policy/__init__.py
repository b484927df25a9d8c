"""Decision policy above identification: door access, payment, lockouts."""
