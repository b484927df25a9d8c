"""What replicas and workers share when one machine is not enough: the NATS connection
(camera leases, gallery announcements, the alert stream) and Redis-held state."""
