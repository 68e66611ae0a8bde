"""A member of an app: the record path (the primary), the replay path (a replica),
the failover and handover that turn one into the other, and what both share: how the app
is started and held, its stdin, its metrics."""
