#!/usr/bin/env bash
# Start the local PostgreSQL and RabbitMQ of a development machine when they do not answer
# (used by `make run` and CI). With AMQP_URL / DATABASE_URL set, those servers are used as
# they are and nothing is started.
set -euo pipefail

answers() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

wait_for() { # port, name
  for _ in $(seq 1 60); do answers "$1" && return 0; sleep 1; done
  echo "$2 does not answer on 127.0.0.1:$1" >&2
  return 1
}

if [ -z "${DATABASE_URL:-}" ] && ! answers 5432; then
  echo "starting PostgreSQL"
  pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -n 1)" main start
  wait_for 5432 PostgreSQL
fi
if [ -z "${AMQP_URL:-}" ] && ! answers 5672; then
  echo "starting RabbitMQ"
  rabbitmq-server -detached
  wait_for 5672 RabbitMQ
fi
