"""What crosses Kafka: the Avro codec of mig's records, their signatures and the
app identity a log carries."""
