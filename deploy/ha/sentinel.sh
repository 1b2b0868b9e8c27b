#!/bin/sh
# One sentinel of the `ha` profile. Sentinel rewrites its config file (what it learns:
# replicas, other sentinels, the current master), so the file is generated at start in a
# writable place from this script and the secrets; nothing of it outlives the container.
#
# Short failure detection (down-after 1 s, failover-timeout 5 s): a dead master is replaced
# in about 2-3 s. Users on the sentinels themselves, `default` off:
# - sentinel: the other sentinels (votes, hellos); the same name and password Sentinel uses
#   on the Redis nodes (the `sentinel` user of deploy/redis/users.acl.template);
# - sentinel_client: the services (REDIS_SENTINEL_USERNAME): find the master, hear
#   +switch-master, nothing else.
set -eu
umask 077
conf=/tmp/sentinel.conf
peer=$(cat /run/secrets/redis_sentinel_password)
client=$(cat /run/secrets/sentinel_client_password)
cat >"$conf" <<CONF
port 26379
sentinel resolve-hostnames yes
user default off
user sentinel on >$peer resetchannels -@all +ping +client|setname +sentinel|is-master-down-by-addr +publish +subscribe &__sentinel__:hello +info +role
user sentinel_client on >$client resetchannels -@all +ping +client|setname +sentinel|masters +sentinel|get-master-addr-by-name +subscribe &+switch-master
sentinel sentinel-user sentinel
sentinel sentinel-pass $peer
sentinel monitor mymaster ${SENTINEL_MASTER_HOST:-redis} 6379 2
sentinel auth-user mymaster sentinel
sentinel auth-pass mymaster $peer
sentinel down-after-milliseconds mymaster ${SENTINEL_DOWN_AFTER_MS:-1000}
sentinel failover-timeout mymaster ${SENTINEL_FAILOVER_TIMEOUT_MS:-5000}
sentinel parallel-syncs mymaster 1
CONF
exec redis-server "$conf" --sentinel
