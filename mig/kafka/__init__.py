"""mig's Kafka: the clients and their settings, which Kafka a command talks to, the
transactional writer every member appends with, and the app's topics."""
