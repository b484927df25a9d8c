"""Decision policy above identification and verification: who may open a door, which 1:1
checks need a live face (payment), when repeated failures lock a caller out, and what the
retention pass deletes by age or expiry.

Each rule lives here once; the REST routes and any other caller only parse and format."""
