"""Liveness: challenge sessions (blink, turn) judged on dense landmarks, and passive
multi-frame cues (planarity, screen texture) against print and replay attacks."""
