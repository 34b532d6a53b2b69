"""Starting a whole resizeflow stack as local processes.

One builder (:mod:`resizeflow.launch.stack`) and one process supervisor
(:mod:`resizeflow.launch.supervisor`) serve the demo, the tests, the chaos
harness and the benchmark: a broker (a private redis-server, a Redis key
prefix or a RabbitMQ vhost), a database (SQLite, or a scratch PostgreSQL
database), worker processes per host, beat, the API and Flower.
"""
