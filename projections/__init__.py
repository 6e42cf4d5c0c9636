"""Kafka -> PostgreSQL read models. Rows and consumed offsets commit in one transaction."""
