#!/bin/sh
# A Redis node of the `ha` profile (the stack's `redis`, the first master, and
# `redis-replica`). Sentinel may make either one the master or the replica, so both know how
# to sync from the other: as the `replication` ACL user, its password written into a config
# file at start (not in argv, not in the environment). Extra arguments (--replicaof ...) follow.
set -eu
umask 077
conf=/tmp/redis-ha.conf
{
  echo "masteruser replication"
  printf 'masterauth %s\n' "$(cat /run/secrets/redis_replication_password)"
} >"$conf"
exec redis-server "$conf" --save "" --appendonly no --aclfile /run/secrets/redis_acl "$@"
