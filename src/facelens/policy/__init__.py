"""Decision policy above identification and verification: who may open a door, which 1:1
checks need a live face (payment), and when repeated failures lock a caller out.

Each rule lives here once; the REST routes and any other caller only parse and format."""
