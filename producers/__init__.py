"""Code that appends records to Kafka: the idempotent producer and topic bootstrap."""
