//! Redis commands: the command table (name, arity, flags, key positions, docs,
//! which also answers COMMAND), the dispatch that checks a request against it
//! once, and the connection and server commands (AUTH, HELLO, SELECT, INFO,
//! COMMAND, CLUSTER; the operators' CLIENT, CONFIG, SLOWLOG and LATENCY are
//! `admin`'s), and MULTI / EXEC (the queue and watches are
//! `transaction`'s; running the queue is here). The data commands are typed in
//! `data` and run against a `backend::Backend` (this node's storage, or the
//! cluster).
//! Owns command semantics only: framing is `resp`, connections are `server`,
//! durability is `storage`, how a read or write travels is `backend`.
//!
//! Write commands are not awaited here: they return a [`Step::Pending`] ticket so that
//! a pipeline of writes from one connection lands in one group commit. The connection
//! resolves pending tickets, in order, before it runs any other command, so every
//! read sees the same connection's earlier writes.

use crate::backend::Backend;
use crate::data::DataCommand;
use crate::info::REDIS_VERSION;
use crate::reply::{err, lower, parse_int, syntax_error, Waiting};
pub use crate::reply::{
    finish_routed, finish_write, write_error_reply, ReplyShape, RoutedTicket, Step,
};
use crate::resp::{Protocol, Reply};
use crate::shared::Shared;
use crate::transaction::{self, ExecPlan, Transaction};
use bytes::Bytes;
use std::sync::atomic::Ordering;

/// Per-connection state.
pub struct Session {
    pub id: u64,
    pub namespace: u8,
    pub protocol: Protocol,
    pub name: Option<Bytes>,
    pub lib_name: Option<Bytes>,
    pub lib_ver: Option<Bytes>,
    pub authenticated: bool,
    pub peer: String,
    /// MONITOR was called: the connection becomes a feed of commands.
    pub monitor: bool,
    /// Connected on a member's Redis Cluster port: INFO says cluster_enabled:1
    /// and DBSIZE, KEYS and SCAN count only the slots this node masters, so a
    /// client that fans out over the masters sees each key once. On the plain
    /// port every node shows the whole keyspace.
    pub redis_cluster: bool,
    /// MULTI's queue and WATCH's keys.
    pub transaction: Transaction,
    /// EXEC is running this connection's queue under the node's exclusive
    /// turn: a blocking command must not wait (it tries once, as in Redis).
    pub running_exec: bool,
}

impl Session {
    /// A new connection's session (RESET returns to it, keeping the id and
    /// the peer).
    pub fn new(id: u64, peer: String, redis_cluster: bool, shared: &Shared) -> Session {
        Session {
            id,
            namespace: 0,
            protocol: Protocol::Resp2,
            name: None,
            lib_name: None,
            lib_ver: None,
            authenticated: shared.config.requirepass.is_none(),
            peer,
            monitor: false,
            redis_cluster,
            transaction: Default::default(),
            running_exec: false,
        }
    }

    /// Copy what CLIENT LIST shows of this session into `view`.
    pub fn fill_view(&self, view: &mut crate::clients::ClientView) {
        view.name = self.name.clone();
        view.lib_name = self.lib_name.clone();
        view.lib_ver = self.lib_ver.clone();
        view.db = self.namespace;
        view.resp = if self.protocol == Protocol::Resp3 {
            3
        } else {
            2
        };
        view.multi = self.transaction.queued_len();
        view.monitor = self.monitor;
    }
}

pub struct CommandSpec {
    pub name: &'static str,
    /// Redis convention: N = exactly N arguments including the name; -N = at least N.
    pub arity: i64,
    pub flags: &'static [&'static str],
    pub first_key: i64,
    pub last_key: i64,
    pub step: i64,
    pub group: &'static str,
    pub summary: &'static str,
}

macro_rules! spec {
    ($name:expr, $arity:expr, [$($flag:expr),*], $fk:expr, $lk:expr, $st:expr, $group:expr, $summary:expr) => {
        CommandSpec { name: $name, arity: $arity, flags: &[$($flag),*], first_key: $fk, last_key: $lk, step: $st, group: $group, summary: $summary }
    };
}

pub static COMMANDS: &[CommandSpec] = &[
    spec!("get", 2, ["readonly", "fast"], 1, 1, 1, "string", "Returns the value of a key (the winning sibling)."),
    spec!("set", -3, ["write", "denyoom"], 1, 1, 1, "string", "Sets the value of a key, durably before the reply."),
    spec!("ping", -1, ["fast"], 0, 0, 0, "connection", "Returns the server's liveliness response."),
    spec!("echo", 2, ["fast"], 0, 0, 0, "connection", "Returns the given string."),
    spec!("quit", -1, ["fast", "no-auth"], 0, 0, 0, "connection", "Closes the connection."),
    spec!("auth", -2, ["fast", "no-auth"], 0, 0, 0, "connection", "Authenticates the connection."),
    spec!("hello", -1, ["fast", "no-auth"], 0, 0, 0, "connection", "Handshakes with the server (RESP2 or RESP3)."),
    spec!("select", 2, ["fast"], 0, 0, 0, "connection", "Changes the selected namespace (database)."),
    spec!("client", -2, ["slow"], 0, 0, 0, "connection", "CLIENT ID, SETNAME, GETNAME, SETINFO, INFO, LIST, KILL, PAUSE, UNPAUSE, NO-EVICT, NO-TOUCH."),
    spec!("monitor", 1, ["admin", "no-script"], 0, 0, 0, "server", "Streams every command this node runs, as it runs it."),
    spec!("slowlog", -2, ["admin"], 0, 0, 0, "server", "SLOWLOG GET [count], LEN, RESET: commands slower than slowlog-log-slower-than."),
    spec!("latency", -2, ["admin"], 0, 0, 0, "server", "LATENCY LATEST, HISTORY event, RESET, DOCTOR: spikes past latency-monitor-threshold."),
    spec!("setnx", 3, ["write", "denyoom", "fast"], 1, 1, 1, "string", "Sets the value of a key only when it does not exist."),
    spec!("getset", 3, ["write", "denyoom", "fast"], 1, 1, 1, "string", "Sets a key and returns its previous value."),
    spec!("getdel", 2, ["write", "fast"], 1, 1, 1, "string", "Returns a key's value and deletes the key."),
    spec!("strlen", 2, ["readonly", "fast"], 1, 1, 1, "string", "Returns the length of a key's value."),
    spec!("getrange", 4, ["readonly"], 1, 1, 1, "string", "Returns a substring of a key's value."),
    spec!("substr", 4, ["readonly"], 1, 1, 1, "string", "Returns a substring of a key's value (same as GETRANGE)."),
    spec!("incr", 2, ["write", "denyoom", "fast"], 1, 1, 1, "string", "Adds 1 to a key's integer value (single node)."),
    spec!("decr", 2, ["write", "denyoom", "fast"], 1, 1, 1, "string", "Subtracts 1 from a key's integer value (single node)."),
    spec!("incrby", 3, ["write", "denyoom", "fast"], 1, 1, 1, "string", "Adds an integer to a key's integer value (single node)."),
    spec!("decrby", 3, ["write", "denyoom", "fast"], 1, 1, 1, "string", "Subtracts an integer from a key's integer value (single node)."),
    spec!("incrbyfloat", 3, ["write", "denyoom", "fast"], 1, 1, 1, "string", "Adds a float to a key's numeric value (single node)."),
    spec!("append", 3, ["write", "denyoom", "fast"], 1, 1, 1, "string", "Appends to a key's value; returns the new length (single node)."),
    spec!("setrange", 4, ["write", "denyoom"], 1, 1, 1, "string", "Overwrites part of a key's value from an offset (single node)."),
    spec!("msetnx", -3, ["write", "denyoom"], 1, -1, 2, "string", "Sets several keys only if none exists, all or nothing (single node)."),
    spec!("rename", 3, ["write"], 1, 2, 1, "keyspace", "Renames a key, replacing the destination (single node)."),
    spec!("renamenx", 3, ["write", "fast"], 1, 2, 1, "keyspace", "Renames a key only if the destination does not exist (single node)."),
    spec!("copy", -3, ["write", "denyoom"], 1, 2, 1, "keyspace", "COPY source destination [DB n] [REPLACE] (single node)."),
    spec!("touch", -2, ["readonly", "fast"], 1, -1, 1, "keyspace", "Counts how many of the keys exist."),
    spec!("time", 1, ["fast"], 0, 0, 0, "server", "Returns the node's wall clock: seconds and microseconds."),
    spec!("function", -2, ["noscript"], 0, 0, 0, "scripting", "FUNCTION FLUSH and LIST: Shoal runs no functions, so there are none to list or delete."),
    spec!("mget", -2, ["readonly", "fast"], 1, -1, 1, "string", "Returns the values of several keys."),
    spec!("mset", -3, ["write", "denyoom"], 1, -1, 2, "string", "Sets several keys in one durable batch."),
    spec!("del", -2, ["write"], 1, -1, 1, "keyspace", "Deletes keys (delete markers until collected)."),
    spec!("unlink", -2, ["write", "fast"], 1, -1, 1, "keyspace", "Deletes keys (same as DEL)."),
    spec!("exists", -2, ["readonly", "fast"], 1, -1, 1, "keyspace", "Counts how many of the keys exist."),
    spec!("sort", -2, ["write", "denyoom", "movablekeys"], 1, 1, 1, "keyspace", "SORT key [BY pattern] [LIMIT offset count] [GET pattern ...] [ASC|DESC] [ALPHA] [STORE destination]: a list's, set's or sorted set's elements sorted."),
    spec!("sort_ro", -2, ["readonly", "movablekeys"], 1, 1, 1, "keyspace", "SORT without STORE."),
    spec!("type", 2, ["readonly", "fast"], 1, 1, 1, "keyspace", "Returns the type of a key: string, hash, set, list or none."),
    spec!("ttl", 2, ["readonly", "fast"], 1, 1, 1, "keyspace", "Returns the seconds left before a key expires (-1: never, -2: absent)."),
    spec!("pttl", 2, ["readonly", "fast"], 1, 1, 1, "keyspace", "Like TTL, in milliseconds."),
    spec!("expiretime", 2, ["readonly", "fast"], 1, 1, 1, "keyspace", "Returns when a key expires, in Unix seconds (-1: never, -2: absent)."),
    spec!("pexpiretime", 2, ["readonly", "fast"], 1, 1, 1, "keyspace", "Like EXPIRETIME, in milliseconds."),
    spec!("expire", -3, ["write", "fast"], 1, 1, 1, "keyspace", "Sets a key's time to live in seconds [NX|XX|GT|LT] (single node)."),
    spec!("pexpire", -3, ["write", "fast"], 1, 1, 1, "keyspace", "Sets a key's time to live in milliseconds [NX|XX|GT|LT] (single node)."),
    spec!("expireat", -3, ["write", "fast"], 1, 1, 1, "keyspace", "Sets when a key expires, in Unix seconds [NX|XX|GT|LT] (single node)."),
    spec!("pexpireat", -3, ["write", "fast"], 1, 1, 1, "keyspace", "Sets when a key expires, in Unix milliseconds [NX|XX|GT|LT] (single node)."),
    spec!("persist", 2, ["write", "fast"], 1, 1, 1, "keyspace", "Removes a key's expiry (single node)."),
    spec!("setex", 4, ["write", "denyoom"], 1, 1, 1, "string", "Sets a key that expires after the given seconds."),
    spec!("psetex", 4, ["write", "denyoom"], 1, 1, 1, "string", "Sets a key that expires after the given milliseconds."),
    spec!("getex", -2, ["write", "fast"], 1, 1, 1, "string", "Returns a key's value, setting or removing its expiry [EX|PX|EXAT|PXAT|PERSIST] (options: single node)."),
    spec!("dbsize", 1, ["readonly", "fast"], 0, 0, 0, "server", "Returns the number of keys in the namespace."),
    spec!("keys", 2, ["readonly"], 0, 0, 0, "keyspace", "Returns all keys matching a pattern."),
    spec!("scan", -2, ["readonly"], 0, 0, 0, "keyspace", "Iterates over the keys of the namespace."),
    spec!("flushdb", -1, ["write"], 0, 0, 0, "server", "Deletes all keys of the namespace."),
    spec!("swapdb", 3, ["write", "fast"], 0, 0, 0, "server", "Exchanges two databases at once: every client selected on one sees the other's keys (single node)."),
    spec!("flushall", -1, ["write"], 0, 0, 0, "server", "Deletes all keys of all namespaces."),
    spec!("role", 1, ["fast"], 0, 0, 0, "server", "Returns this node's role: master (every node takes writes)."),
    spec!("config", -2, ["admin"], 0, 0, 0, "server", "CONFIG GET, CONFIG SET (slowlog and latency parameters), CONFIG RESETSTAT."),
    spec!("info", -1, ["slow"], 0, 0, 0, "server", "Returns information and statistics about the server."),
    spec!("command", -1, ["slow"], 0, 0, 0, "server", "COMMAND, COMMAND COUNT, COMMAND DOCS, COMMAND INFO."),
    spec!("cluster", -2, ["slow"], 0, 0, 0, "cluster", "CLUSTER INFO, MYID, NODES, SLOTS, SHARDS, KEYSLOT, COUNTKEYSINSLOT, GETKEYSINSLOT (any node serves any key)."),
    spec!("readonly", 1, ["fast", "loading", "stale"], 0, 0, 0, "cluster", "Accepted on a cluster member: every owner serves reads."),
    spec!("readwrite", 1, ["fast", "loading", "stale"], 0, 0, 0, "cluster", "Accepted on a cluster member: every owner takes writes."),
    spec!("asking", 1, ["fast"], 0, 0, 0, "cluster", "Accepted on a cluster member: slots never migrate with ASK redirects."),
    spec!("hset", -4, ["write", "denyoom", "fast"], 1, 1, 1, "hash", "Sets fields of a hash; returns how many were new."),
    spec!("hmset", -4, ["write", "denyoom", "fast"], 1, 1, 1, "hash", "Sets fields of a hash (same as HSET, answers OK)."),
    spec!("hsetnx", 4, ["write", "denyoom", "fast"], 1, 1, 1, "hash", "Sets a field of a hash only when it does not exist."),
    spec!("hget", 3, ["readonly", "fast"], 1, 1, 1, "hash", "Returns the value of a field of a hash."),
    spec!("hmget", -3, ["readonly", "fast"], 1, 1, 1, "hash", "Returns the values of fields of a hash."),
    spec!("hexists", 3, ["readonly", "fast"], 1, 1, 1, "hash", "Whether a field of a hash exists."),
    spec!("hstrlen", 3, ["readonly", "fast"], 1, 1, 1, "hash", "Returns the length of a field's value."),
    spec!("hgetall", 2, ["readonly"], 1, 1, 1, "hash", "Returns every field of a hash with its value."),
    spec!("hkeys", 2, ["readonly"], 1, 1, 1, "hash", "Returns every field name of a hash."),
    spec!("hvals", 2, ["readonly"], 1, 1, 1, "hash", "Returns every value of a hash."),
    spec!("hlen", 2, ["readonly", "fast"], 1, 1, 1, "hash", "Returns how many fields a hash has."),
    spec!("hdel", -3, ["write", "fast"], 1, 1, 1, "hash", "Deletes fields of a hash; returns how many existed."),
    spec!("hincrby", 4, ["write", "denyoom", "fast"], 1, 1, 1, "hash", "Adds an integer to a field's integer value (single node)."),
    spec!("hincrbyfloat", 4, ["write", "denyoom", "fast"], 1, 1, 1, "hash", "Adds a float to a field's numeric value (single node)."),
    spec!("hrandfield", -2, ["readonly"], 1, 1, 1, "hash", "Returns random fields of a hash [count [WITHVALUES]]."),
    spec!("hscan", -3, ["readonly"], 1, 1, 1, "hash", "HSCAN key cursor [MATCH pattern] [COUNT n]: the whole hash in one step."),
    spec!("sadd", -3, ["write", "denyoom", "fast"], 1, 1, 1, "set", "Adds members to a set; returns how many were new."),
    spec!("srem", -3, ["write", "fast"], 1, 1, 1, "set", "Removes members from a set; returns how many were there."),
    spec!("sismember", 3, ["readonly", "fast"], 1, 1, 1, "set", "Whether a member is in a set."),
    spec!("smismember", -3, ["readonly", "fast"], 1, 1, 1, "set", "Whether each member is in a set."),
    spec!("scard", 2, ["readonly", "fast"], 1, 1, 1, "set", "Returns how many members a set has."),
    spec!("smembers", 2, ["readonly"], 1, 1, 1, "set", "Returns every member of a set."),
    spec!("srandmember", -2, ["readonly"], 1, 1, 1, "set", "Returns random members of a set [count]."),
    spec!("spop", -2, ["write", "fast"], 1, 1, 1, "set", "Removes and returns random members of a set [count] (a cluster may pop one member on both sides of a partition)."),
    spec!("smove", 4, ["write", "fast"], 1, 2, 1, "set", "Moves a member from one set to another (single node)."),
    spec!("sinter", -2, ["readonly"], 1, -1, 1, "set", "Returns the intersection of sets."),
    spec!("sunion", -2, ["readonly"], 1, -1, 1, "set", "Returns the union of sets."),
    spec!("sdiff", -2, ["readonly"], 1, -1, 1, "set", "Returns the members of the first set not in the others."),
    spec!("sinterstore", -3, ["write", "denyoom"], 1, -1, 1, "set", "Stores the intersection of sets (single node)."),
    spec!("sunionstore", -3, ["write", "denyoom"], 1, -1, 1, "set", "Stores the union of sets (single node)."),
    spec!("sdiffstore", -3, ["write", "denyoom"], 1, -1, 1, "set", "Stores the difference of sets (single node)."),
    spec!("sintercard", -3, ["readonly"], 2, 2, 1, "set", "SINTERCARD numkeys key [key ...] [LIMIT limit]: the intersection's size."),
    spec!("sscan", -3, ["readonly"], 1, 1, 1, "set", "SSCAN key cursor [MATCH pattern] [COUNT n]: the whole set in one step."),
    spec!("lpush", -3, ["write", "denyoom", "fast"], 1, 1, 1, "list", "Pushes elements at a list's head; returns its length."),
    spec!("rpush", -3, ["write", "denyoom", "fast"], 1, 1, 1, "list", "Pushes elements at a list's tail; returns its length."),
    spec!("lpushx", -3, ["write", "denyoom", "fast"], 1, 1, 1, "list", "LPUSH only when the list exists."),
    spec!("rpushx", -3, ["write", "denyoom", "fast"], 1, 1, 1, "list", "RPUSH only when the list exists."),
    spec!("lpop", -2, ["write", "fast"], 1, 1, 1, "list", "Removes and returns elements from a list's head [count]."),
    spec!("rpop", -2, ["write", "fast"], 1, 1, 1, "list", "Removes and returns elements from a list's tail [count]."),
    spec!("llen", 2, ["readonly", "fast"], 1, 1, 1, "list", "Returns a list's length."),
    spec!("lrange", 4, ["readonly"], 1, 1, 1, "list", "Returns a range of a list's elements."),
    spec!("lindex", 3, ["readonly"], 1, 1, 1, "list", "Returns the element at an index."),
    spec!("lset", 4, ["write", "denyoom"], 1, 1, 1, "list", "Sets the element at an index."),
    spec!("lrem", 4, ["write"], 1, 1, 1, "list", "Removes elements equal to a value [count from head or tail]."),
    spec!("ltrim", 4, ["write"], 1, 1, 1, "list", "Keeps only a range of a list."),
    spec!("linsert", 5, ["write", "denyoom"], 1, 1, 1, "list", "Inserts an element before or after a pivot."),
    spec!("lpos", -3, ["readonly"], 1, 1, 1, "list", "Returns the index of matching elements [RANK r] [COUNT n] [MAXLEN m]."),
    spec!("lmove", 5, ["write", "denyoom"], 1, 2, 1, "list", "Moves an element from one list to another (single node)."),
    spec!("rpoplpush", 3, ["write", "denyoom"], 1, 2, 1, "list", "Moves a list's tail to another's head (single node)."),
    spec!("blpop", -3, ["write", "blocking"], 1, -2, 1, "list", "LPOP from the first non-empty list, waiting up to a timeout (single node)."),
    spec!("brpop", -3, ["write", "blocking"], 1, -2, 1, "list", "RPOP from the first non-empty list, waiting up to a timeout (single node)."),
    spec!("lmpop", -4, ["write"], 0, 0, 0, "list", "LMPOP numkeys key [key ...] LEFT|RIGHT [COUNT n]: pops from the first non-empty list."),
    spec!("blmpop", -5, ["write", "blocking"], 0, 0, 0, "list", "LMPOP, waiting up to a timeout (single node)."),
    spec!("blmove", 6, ["write", "denyoom", "blocking"], 1, 2, 1, "list", "LMOVE, waiting up to a timeout (single node)."),
    spec!("brpoplpush", 4, ["write", "denyoom", "blocking"], 1, 2, 1, "list", "RPOPLPUSH, waiting up to a timeout (single node)."),
    spec!("zadd", -4, ["write", "denyoom", "fast"], 1, 1, 1, "sorted_set", "ZADD key [NX|XX] [GT|LT] [CH] [INCR] score member ...: sets members' scores."),
    spec!("zincrby", 4, ["write", "denyoom", "fast"], 1, 1, 1, "sorted_set", "Adds to a member's score (single node)."),
    spec!("zrem", -3, ["write", "fast"], 1, 1, 1, "sorted_set", "Removes members; returns how many were members."),
    spec!("zcard", 2, ["readonly", "fast"], 1, 1, 1, "sorted_set", "Returns how many members a sorted set holds."),
    spec!("zscore", 3, ["readonly", "fast"], 1, 1, 1, "sorted_set", "Returns a member's score."),
    spec!("zmscore", -3, ["readonly", "fast"], 1, 1, 1, "sorted_set", "Returns several members' scores."),
    spec!("zrank", 3, ["readonly", "fast"], 1, 1, 1, "sorted_set", "Returns a member's rank, lowest score first."),
    spec!("zrevrank", 3, ["readonly", "fast"], 1, 1, 1, "sorted_set", "Returns a member's rank, highest score first."),
    spec!("zcount", 4, ["readonly", "fast"], 1, 1, 1, "sorted_set", "Counts members with scores in a range."),
    spec!("zlexcount", 4, ["readonly", "fast"], 1, 1, 1, "sorted_set", "Counts members in a member range."),
    spec!("zrange", -4, ["readonly"], 1, 1, 1, "sorted_set", "ZRANGE key start stop [BYSCORE|BYLEX] [REV] [LIMIT offset count] [WITHSCORES]."),
    spec!("zrangebyscore", -4, ["readonly"], 1, 1, 1, "sorted_set", "Members with scores in a range [WITHSCORES] [LIMIT offset count]."),
    spec!("zrevrangebyscore", -4, ["readonly"], 1, 1, 1, "sorted_set", "ZRANGEBYSCORE from the highest score."),
    spec!("zrangebylex", -4, ["readonly"], 1, 1, 1, "sorted_set", "Members in a member range [LIMIT offset count]."),
    spec!("zrevrangebylex", -4, ["readonly"], 1, 1, 1, "sorted_set", "ZRANGEBYLEX from the highest member."),
    spec!("zrevrange", -4, ["readonly"], 1, 1, 1, "sorted_set", "Members by rank from the highest score [WITHSCORES]."),
    spec!("zpopmin", -2, ["write", "fast"], 1, 1, 1, "sorted_set", "Removes and returns the lowest-scored members [count]."),
    spec!("zpopmax", -2, ["write", "fast"], 1, 1, 1, "sorted_set", "Removes and returns the highest-scored members [count]."),
    spec!("bzpopmin", -3, ["write", "blocking", "fast"], 1, -2, 1, "sorted_set", "ZPOPMIN from the first non-empty sorted set, waiting up to a timeout (single node)."),
    spec!("bzpopmax", -3, ["write", "blocking", "fast"], 1, -2, 1, "sorted_set", "ZPOPMAX from the first non-empty sorted set, waiting up to a timeout (single node)."),
    spec!("bzmpop", -5, ["write", "blocking"], 0, 0, 0, "sorted_set", "ZMPOP, waiting up to a timeout (single node)."),
    spec!("zmpop", -4, ["write"], 0, 0, 0, "sorted_set", "ZMPOP numkeys key [key ...] MIN|MAX [COUNT n]: pops from the first non-empty sorted set."),
    spec!("zremrangebyrank", 4, ["write"], 1, 1, 1, "sorted_set", "Removes members by rank."),
    spec!("zremrangebyscore", 4, ["write"], 1, 1, 1, "sorted_set", "Removes members with scores in a range."),
    spec!("zremrangebylex", 4, ["write"], 1, 1, 1, "sorted_set", "Removes members in a member range."),
    spec!("zrandmember", -2, ["readonly"], 1, 1, 1, "sorted_set", "Returns random members [count [WITHSCORES]]."),
    spec!("zscan", -3, ["readonly"], 1, 1, 1, "sorted_set", "ZSCAN key cursor [MATCH pattern] [COUNT n]: the whole sorted set in one step."),
    spec!("zunion", -3, ["readonly"], 0, 0, 0, "sorted_set", "ZUNION numkeys key ... [WEIGHTS w ...] [AGGREGATE SUM|MIN|MAX] [WITHSCORES]."),
    spec!("zinter", -3, ["readonly"], 0, 0, 0, "sorted_set", "ZINTER numkeys key ... [WEIGHTS w ...] [AGGREGATE SUM|MIN|MAX] [WITHSCORES]."),
    spec!("zdiff", -3, ["readonly"], 0, 0, 0, "sorted_set", "ZDIFF numkeys key ... [WITHSCORES]: members of the first not in the others."),
    spec!("zintercard", -3, ["readonly"], 0, 0, 0, "sorted_set", "ZINTERCARD numkeys key ... [LIMIT n]: how many members all share."),
    spec!("zunionstore", -4, ["write", "denyoom"], 1, 1, 1, "sorted_set", "ZUNION into a destination (single node)."),
    spec!("zinterstore", -4, ["write", "denyoom"], 1, 1, 1, "sorted_set", "ZINTER into a destination (single node)."),
    spec!("zdiffstore", -4, ["write", "denyoom"], 1, 1, 1, "sorted_set", "ZDIFF into a destination (single node)."),
    spec!("zrangestore", -5, ["write", "denyoom"], 1, 2, 1, "sorted_set", "ZRANGE into a destination (single node)."),
    spec!("getbit", 3, ["readonly", "fast"], 1, 1, 1, "bitmap", "Returns the bit at an offset of a string (bit 0: the first byte's highest)."),
    spec!("setbit", 4, ["write", "denyoom"], 1, 1, 1, "bitmap", "Sets or clears one bit; returns the bit before (single node)."),
    spec!("bitcount", -2, ["readonly"], 1, 1, 1, "bitmap", "Counts set bits [start end [BYTE|BIT]]."),
    spec!("bitpos", -3, ["readonly"], 1, 1, 1, "bitmap", "Finds the first set or clear bit [start [end [BYTE|BIT]]]."),
    spec!("lcs", -3, ["readonly"], 1, 2, 1, "string", "LCS key1 key2 [LEN] [IDX] [MINMATCHLEN n] [WITHMATCHLEN]: the longest common subsequence."),
    spec!("move", 3, ["write", "fast"], 1, 1, 1, "keyspace", "Moves a key to another database unless it exists there (single node)."),
    spec!("randomkey", 1, ["readonly"], 0, 0, 0, "keyspace", "Returns a random key."),
    spec!("shutdown", -1, ["admin", "noscript", "loading", "stale"], 0, 0, 0, "server", "Stops the node as SIGTERM does (the log synced); SAVE and NOSAVE alike. No reply: the connection closes."),
    spec!("save", 1, ["admin", "noscript"], 0, 0, 0, "server", "Makes every write so far durable (they already are with fsync always)."),
    spec!("bgsave", -1, ["admin", "noscript"], 0, 0, 0, "server", "SAVE, answered as Redis answers BGSAVE once done."),
    spec!("lastsave", 1, ["fast"], 0, 0, 0, "server", "The Unix time of the last SAVE (or of the start)."),
    spec!("reset", 1, ["fast", "noscript"], 0, 0, 0, "connection", "Resets the connection: database 0, RESP2, no name, no transaction, no MONITOR."),
    spec!("object", -2, ["readonly"], 2, 2, 1, "keyspace", "OBJECT ENCODING|REFCOUNT|HELP key: Redis's encoding name for the key's type and size; refcount 1."),
    spec!("memory", -2, ["readonly"], 0, 0, 0, "server", "MEMORY USAGE key: about how many bytes the key takes in storage."),
    spec!("multi", 1, ["fast", "no-script"], 0, 0, 0, "transactions", "Starts a transaction: later commands are queued until EXEC or DISCARD."),
    spec!("exec", 1, ["slow", "no-script"], 0, 0, 0, "transactions", "Runs the queued commands, no other command of this node between them; nil when a watched key changed."),
    spec!("discard", 1, ["fast", "no-script"], 0, 0, 0, "transactions", "Discards the queued commands and the watches."),
    spec!("watch", -2, ["fast", "no-script"], 1, -1, 1, "transactions", "EXEC runs only if none of these keys changed since."),
    spec!("unwatch", 1, ["fast", "no-script"], 0, 0, 0, "transactions", "Forgets every watched key."),
    spec!("shoal.backup", -2, ["admin", "slow"], 0, 0, 0, "shoal", "Online backup (what `shoal backup` sends): BEGIN | READ id segment offset count | END id."),
    spec!("shoal.cluster", -1, ["slow"], 0, 0, 0, "shoal", "Cluster status: members, states, ring, partitions per node, anti-entropy and repair counters."),
    spec!("shoal.ring", -2, ["admin", "slow"], 0, 0, 0, "shoal", "Change the ring: JOIN id host:port, LEAVE id, REPLACE old new host:port."),
    spec!("shoal.siblings", -2, ["readonly"], 1, 1, 1, "shoal", "SHOAL.SIBLINGS key [FIELD f | MEMBER m]: all siblings of a key (or of a hash field, a set member) with their causal context."),
    spec!("shoal.put", -3, ["write", "denyoom"], 1, 1, 1, "shoal", "SHOAL.PUT key value [CONTEXT ctx] [PXAT ms] [FIELD f | MEMBER m]: write (a hash field's or a set member's) replacing only what ctx covers (expiring at ms); replies [dot, superseded context]."),
    spec!("shoal.del", -2, ["write"], 1, 1, 1, "shoal", "SHOAL.DEL key [CONTEXT ctx] [FIELD f | MEMBER m]: delete what ctx covers (of a hash field or a set member); replies [dot, superseded context]."),
];

/// The command table entry for a request's first argument, case-insensitively and
/// without allocating (this runs once per request).
pub fn lookup(name: &[u8]) -> Option<&'static CommandSpec> {
    COMMANDS
        .iter()
        .find(|c| c.name.len() == name.len() && c.name.as_bytes().eq_ignore_ascii_case(name))
}

/// A table entry's place in [`COMMANDS`], what `command_stats` counts by.
pub fn kind_of(spec: &'static CommandSpec) -> usize {
    let offset_bytes = spec as *const CommandSpec as usize - COMMANDS.as_ptr() as usize;
    let kind = offset_bytes / std::mem::size_of::<CommandSpec>();
    debug_assert!(
        std::ptr::eq(&COMMANDS[kind], spec),
        "spec outside the table"
    );
    kind
}

/// Commands that run under the node's exclusive turn (`shared::Isolation`):
/// EXEC, and the multi-key writes that must read and write with nothing of
/// another connection between.
pub fn runs_alone(name: &str, args: &[Bytes]) -> bool {
    matches!(
        name,
        "exec" | "msetnx" | "rename" | "renamenx" | "copy" | "move" | "swapdb"
    ) || crate::set::runs_alone(name, args)
        || crate::list::runs_alone(name, args)
        || crate::zset::runs_alone(name)
        || crate::zcombine::runs_alone(name)
}

/// Whether the connection gives up its shared turn before running the
/// command: one that runs alone, or a blocking one (it takes the exclusive
/// turn per try, and must not hold up others while it waits).
pub fn releases_turn(name: &str, args: &[Bytes]) -> bool {
    runs_alone(name, args) || crate::blocking::blocks(name)
}

/// Whether the command is a write that may be left pending (pipelined).
/// Commands CLIENT PAUSE WRITE holds back: the table's writes, and EXEC.
pub fn may_write(spec: &CommandSpec) -> bool {
    spec.flags.contains(&"write") || spec.name == "exec"
}

pub fn is_deferrable_write(spec: Option<&CommandSpec>) -> bool {
    spec.is_some_and(|c| {
        matches!(
            c.name,
            "set"
                | "setnx"
                | "mset"
                | "del"
                | "unlink"
                | "shoal.put"
                | "shoal.del"
                | "getset"
                | "getdel"
                | "incr"
                | "decr"
                | "incrby"
                | "decrby"
                | "incrbyfloat"
                | "append"
                | "setex"
                | "psetex"
                | "expire"
                | "pexpire"
                | "expireat"
                | "pexpireat"
                | "persist"
        )
    })
}

/// FUNCTION: Shoal has no scripting, so FLUSH has nothing to delete and LIST
/// nothing to show (clients and test harnesses call both when they start);
/// LOAD and the rest are refused.
fn function(args: &[Bytes]) -> Step {
    match lower(&args[1]).as_str() {
        "flush" if args.len() <= 3 => Step::Reply(Reply::ok()),
        "list" => Step::Reply(Reply::Array(vec![])),
        other => err(format!(
            "ERR FUNCTION {} is not supported: Shoal has no scripting",
            other.to_ascii_uppercase()
        )),
    }
}

/// Run one request: check it against the table, queue it while MULTI is open,
/// else run it.
///
/// Every request builds this future and moves it (a memcpy of its whole
/// size, whatever the command), so the futures of rare commands with large
/// state (EXEC, CLUSTER, SWAPDB, the blocking wait) and of the collections
/// (half again a string's) are boxed where they are awaited (`dispatch`,
/// `Conn::run_one`): a GET copies what a GET needs.
pub async fn execute(
    shared: &Shared,
    session: &mut Session,
    spec: Option<&'static CommandSpec>,
    args: &[Bytes],
) -> Step {
    shared.commands_total.fetch_add(1, Ordering::Relaxed);
    let spec = match admit(session, spec, args) {
        Ok(spec) => spec,
        Err(step) => {
            session.transaction.refused_while_queueing();
            return step;
        }
    };
    if spec.flags.contains(&"denyoom") && shared.maxmemory.exceeded() {
        session.transaction.refused_while_queueing();
        return err(crate::maxmemory::OOM_ERROR);
    }
    if session.transaction.is_queueing() && transaction::refused_inside(spec.name) {
        session.transaction.refused_while_queueing();
        return err("ERR Command not allowed inside a transaction");
    }
    if session.transaction.is_queueing() && !transaction::runs_while_queueing(spec.name) {
        return session.transaction.queue(args.to_vec());
    }
    match spec.name {
        "multi" => session.transaction.begin(),
        "exec" => Box::pin(exec(shared, session)).await,
        "discard" => session.transaction.discard(),
        "watch" => {
            let ns = session.namespace;
            let backend = Backend::of(shared);
            session.transaction.watch(&backend, ns, &args[1..]).await
        }
        "unwatch" => session.transaction.unwatch(),
        name if runs_alone(name, args) => {
            // Held until the write is answered: a check made under the turn
            // must still hold when the next one looks (two MSETNX of one key
            // both won when the turn ended at submission).
            let _alone = shared.isolation.exclusive().await;
            let step = dispatch(shared, session, spec, args).await;
            Step::Reply(Waiting::of(step).0.reply().await)
        }
        _ => dispatch(shared, session, spec, args).await,
    }
}

/// The table's checks: a known command, its arity, authentication.
fn admit(
    session: &Session,
    spec: Option<&'static CommandSpec>,
    args: &[Bytes],
) -> Result<&'static CommandSpec, Step> {
    let Some(spec) = spec else {
        let mut msg = format!(
            "ERR unknown command '{}', with args beginning with: ",
            String::from_utf8_lossy(&args[0])
        );
        for a in args.iter().skip(1).take(8) {
            msg.push_str(&format!("'{}' ", String::from_utf8_lossy(a)));
        }
        return Err(err(msg));
    };
    let argc = args.len() as i64;
    if (spec.arity > 0 && argc != spec.arity) || (spec.arity < 0 && argc < -spec.arity) {
        return Err(err(format!(
            "ERR wrong number of arguments for '{}' command",
            spec.name
        )));
    }
    if !session.authenticated && !spec.flags.contains(&"no-auth") {
        return Err(err("NOAUTH Authentication required."));
    }
    Ok(spec)
}

/// EXEC: under the node's exclusive turn, check the watches, then run the
/// queue in order (a pipeline's writes share group commits, as on a
/// connection) and answer every reply in one array; nil when a watched key
/// changed.
async fn exec(shared: &Shared, session: &mut Session) -> Step {
    let (commands, watched) = match session.transaction.exec() {
        ExecPlan::Refuse(step) => return step,
        ExecPlan::Run { commands, watched } => (commands, watched),
    };
    let grows = |args: &Vec<Bytes>| lookup(&args[0]).is_some_and(|s| s.flags.contains(&"denyoom"));
    if commands.iter().any(grows) && shared.maxmemory.exceeded() {
        return err(format!(
            "EXECABORT Transaction discarded because of: {}",
            crate::maxmemory::OOM_ERROR
        ));
    }
    let _alone = shared.isolation.exclusive().await;
    if !transaction::watches_hold(&Backend::of(shared), &watched).await {
        return Step::Reply(Reply::NullArray);
    }
    let mut replies = Vec::with_capacity(commands.len());
    let mut waiting: Vec<Waiting> = Vec::new();
    session.running_exec = true;
    for args in commands {
        let spec = lookup(&args[0]).expect("queued commands passed the table");
        if !is_deferrable_write(Some(spec)) {
            for w in waiting.drain(..) {
                replies.push(w.reply().await);
            }
        }
        waiting.push(Waiting::of(dispatch(shared, session, spec, &args).await).0);
    }
    session.running_exec = false;
    for w in waiting {
        replies.push(w.reply().await);
    }
    Step::Reply(Reply::Array(replies))
}

/// The arguments of a request that may name keys: the table's key positions,
/// or every argument after the name for a collection command whose keys move
/// (the numkeys commands) and for SORT (BY, GET and STORE name keys). A
/// non-key among them costs a lookup, never a wrong answer.
fn key_arguments<'a>(
    spec: &CommandSpec,
    args: &'a [Bytes],
) -> impl Iterator<Item = &'a Bytes> + 'a {
    let end = args.len().saturating_sub(1);
    let (first, last, step) = if spec.first_key > 0 && !spec.flags.contains(&"movablekeys") {
        let last = match spec.last_key {
            at if at < 0 => (args.len() as i64 + at).max(0) as usize,
            at => at as usize,
        };
        (
            spec.first_key as usize,
            last.min(end),
            spec.step.max(1) as usize,
        )
    } else if spec.first_key > 0 || COLLECTION_GROUPS.contains(&spec.group) {
        (1, end, 1)
    } else {
        (1, 0, 1)
    };
    (first..=last).step_by(step).filter_map(|i| args.get(i))
}

/// The table's groups of the collection commands.
const COLLECTION_GROUPS: [&str; 4] = ["hash", "set", "list", "sorted_set"];

/// Before a command on one node looks at its keys, the collections among
/// them whose deadline passed are deleted (`collection_ttl`). One look at
/// the store when no collection has a deadline.
async fn settle_deadlines(
    shared: &Shared,
    session: &Session,
    spec: &CommandSpec,
    args: &[Bytes],
) -> Result<(), Reply> {
    if shared.cluster.is_some() || !shared.storage.holds_collection_deadlines() {
        return Ok(());
    }
    let mut keys = key_arguments(spec, args).peekable();
    if keys.peek().is_none() {
        return Ok(());
    }
    let backend = Backend::of(shared);
    Box::pin(backend.settle_collection_deadlines(session.namespace, keys)).await
}

/// Run a command the table admitted (not a transaction's own).
async fn dispatch(
    shared: &Shared,
    session: &mut Session,
    spec: &'static CommandSpec,
    args: &[Bytes],
) -> Step {
    if let Err(reply) = settle_deadlines(shared, session, spec, args).await {
        return Step::Reply(reply);
    }
    match spec.name {
        "ping" => match args.len() {
            1 => Step::Reply(Reply::Simple("PONG".into())),
            2 => Step::Reply(Reply::Bulk(args[1].clone())),
            _ => err("ERR wrong number of arguments for 'ping' command"),
        },
        "echo" => Step::Reply(Reply::Bulk(args[1].clone())),
        "reset" => reset(shared, session),
        "save" | "bgsave" | "lastsave" => crate::admin::save(shared, spec.name).await,
        "shoal.backup" => crate::backup::command(shared, args),
        "swapdb" => Box::pin(swapdb(shared, args)).await,
        "sort" | "sort_ro" => {
            let backend = Backend::of(shared);
            crate::sort::sort(&backend, session.namespace, args, spec.name == "sort_ro").await
        }
        "shutdown" => crate::admin::shutdown(shared, &args[1..]).await,
        "quit" => Step::Close(Reply::ok()),
        "auth" => Step::Reply(auth(shared, session, &args[1..])),
        "hello" => hello(shared, session, &args[1..]),
        "select" => select(shared, session, &args[1]),
        "client" => crate::admin::client(shared, session, &args[1..]),
        "config" => crate::admin::config(shared, &args[1..]),
        "slowlog" => crate::admin::slowlog(shared, &args[1..]),
        "latency" => crate::admin::latency(shared, &args[1..]),
        "monitor" => {
            session.monitor = true;
            Step::Reply(Reply::ok())
        }
        "info" => Step::Reply(Reply::Verbatim {
            format: *b"txt",
            text: crate::info::render(
                shared,
                session.redis_cluster,
                args.get(1).map(|a| lower(a)),
                &COMMANDS.iter().map(|c| c.name).collect::<Vec<_>>(),
            ),
        }),
        "command" => command(&args[1..]),
        "time" => Step::Reply(time_reply()),
        "function" => function(args),
        "role" => Step::Reply(role()),
        "cluster" | "shoal.cluster" | "shoal.ring" => {
            Box::pin(cluster_only(shared, session, spec.name, args)).await
        }
        "readonly" | "readwrite" | "asking" => match shared.cluster {
            Some(_) => Step::Reply(Reply::ok()),
            None => err("ERR This instance has cluster support disabled"),
        },
        "memory" => memory(shared, session, args).await,
        "object" | "getbit" | "setbit" | "bitcount" | "bitpos" | "lcs" => {
            bits_and_object(shared, session, spec.name, args).await
        }
        _ if matches!(spec.group, "hash" | "set" | "list" | "sorted_set") => {
            Box::pin(collection(shared, session, spec, args)).await
        }
        _ => data(shared, session, spec, args).await,
    }
}

/// ROLE: every Shoal node takes writes, a master with no Redis replicas.
fn role() -> Reply {
    Reply::Array(vec![
        Reply::Bulk(Bytes::from_static(b"master")),
        Reply::Integer(0),
        Reply::Array(vec![]),
    ])
}

/// SELECT db.
fn select(shared: &Shared, session: &mut Session, db: &[u8]) -> Step {
    match parse_int(db) {
        Some(db) if (0..shared.config.databases as i64).contains(&db) => {
            session.namespace = db as u8;
            Step::Reply(Reply::ok())
        }
        Some(_) => err("ERR DB index is out of range"),
        None => err("ERR value is not an integer or out of range"),
    }
}

/// SWAPDB a b: the two databases exchanged in the SWAPDB map (`databases`),
/// durably, under the node's exclusive turn (it runs alone). Refused on a
/// cluster.
async fn swapdb(shared: &Shared, args: &[Bytes]) -> Step {
    if shared.cluster.is_some() {
        return err("ERR SWAPDB is not supported on a Shoal cluster: its members would disagree about what a database holds");
    }
    let index = |arg: &Bytes, which: &str| match parse_int(arg) {
        Some(db) if (0..shared.config.databases as i64).contains(&db) => Ok(db as usize),
        Some(_) => Err(err("ERR DB index is out of range")),
        None => Err(err(format!("ERR invalid {which} DB index"))),
    };
    let (a, b) = match (index(&args[1], "first"), index(&args[2], "second")) {
        (Ok(a), Ok(b)) => (a, b),
        (Err(step), _) | (_, Err(step)) => return step,
    };
    // Under the exclusive turn (`runs_alone`): no command's reads straddle it.
    let dir = shared.storage.read(|s| s.dir());
    match shared.databases.swap(a, b, dir.as_ref()) {
        Ok(()) => Step::Reply(Reply::ok()),
        Err(e) => err(format!("IOERR SWAPDB could not record the swap: {e}")),
    }
}

/// RESET: the connection as it was new (the same id and peer).
fn reset(shared: &Shared, session: &mut Session) -> Step {
    let peer = std::mem::take(&mut session.peer);
    *session = Session::new(session.id, peer, session.redis_cluster, shared);
    Step::Reply(Reply::Simple("RESET".into()))
}

/// OBJECT, and the bit commands and LCS (`bits`).
async fn bits_and_object(shared: &Shared, session: &Session, name: &str, args: &[Bytes]) -> Step {
    let backend = Backend::of(shared);
    if name == "object" {
        return Step::Reply(crate::types::object(&backend, session.namespace, &args[1..]).await);
    }
    match crate::bits::BitCommand::parse(name, args) {
        Ok(command) => command.run(&backend, session.namespace).await,
        Err(step) => step,
    }
}

/// MEMORY USAGE key [SAMPLES n].
async fn memory(shared: &Shared, session: &Session, args: &[Bytes]) -> Step {
    match (crate::reply::lower(&args[1]).as_str(), args.len()) {
        ("usage", 3 | 5) => Step::Reply(
            crate::types::memory_usage(&Backend::of(shared), session.namespace, &args[2]).await,
        ),
        _ => err("ERR MEMORY USAGE key [SAMPLES count] is the MEMORY subcommand Shoal knows"),
    }
}

/// A hash, set or list command, against this node's backend.
async fn collection(
    shared: &Shared,
    session: &Session,
    spec: &CommandSpec,
    args: &[Bytes],
) -> Step {
    let (backend, ns) = (Backend::of(shared), session.namespace);
    let parsed = match spec.group {
        "hash" => {
            crate::hash::HashCommand::parse(spec.name, args, session.protocol == Protocol::Resp3)
                .map(Collection::Hash)
        }
        "set" => crate::set::SetCommand::parse(spec.name, args).map(Collection::Set),
        "sorted_set" if crate::zcombine::parses(spec.name) => {
            crate::zcombine::ZCombineCommand::parse(spec.name, args).map(Collection::ZCombine)
        }
        "sorted_set" => crate::zset::ZSetCommand::parse(spec.name, args).map(Collection::ZSet),
        _ => crate::list::ListCommand::parse(spec.name, args).map(Collection::List),
    };
    match parsed {
        Ok(Collection::Hash(c)) => c.run(&backend, ns).await,
        Ok(Collection::Set(c)) => c.run(&backend, ns).await,
        Ok(Collection::ZSet(c)) => {
            let isolation = (!session.running_exec).then_some(&shared.isolation);
            c.run(&backend, ns, session.protocol == Protocol::Resp3, isolation)
                .await
        }
        Ok(Collection::ZCombine(c)) => {
            c.run(&backend, ns, session.protocol == Protocol::Resp3)
                .await
        }
        Ok(Collection::List(c)) => {
            let isolation = (!session.running_exec).then_some(&shared.isolation);
            c.run(&backend, ns, isolation).await
        }
        Err(step) => step,
    }
}

/// A parsed collection command.
enum Collection {
    Hash(crate::hash::HashCommand),
    Set(crate::set::SetCommand),
    List(crate::list::ListCommand),
    ZSet(crate::zset::ZSetCommand),
    ZCombine(crate::zcombine::ZCombineCommand),
}

/// A data command, against this node's backend; on a Redis Cluster port its
/// listings keep only the slots this node masters.
async fn data(shared: &Shared, session: &Session, spec: &CommandSpec, args: &[Bytes]) -> Step {
    let ns = session.namespace;
    let now_ms = || shared.storage.wall_ms();
    let command = match DataCommand::parse(ns, shared.config.databases, spec.name, args, now_ms) {
        Ok(command) => command,
        Err(step) => return step,
    };
    match &shared.cluster {
        Some(cluster) if session.redis_cluster => {
            let (map, me) = (cluster.map(), cluster.me());
            let mastered = move |key: &[u8]| {
                crate::redis_cluster::master_of(&map, shoal_engine::slot::key_slot(key)) == Some(me)
            };
            command
                .list(&Backend::of(shared), ns, Some(&mastered))
                .await
        }
        _ => command.run(&Backend::of(shared), ns).await,
    }
}

/// TIME: the node's wall clock as [seconds, microseconds].
fn time_reply() -> Reply {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    Reply::Array(vec![
        Reply::Bulk(now.as_secs().to_string().into()),
        Reply::Bulk(now.subsec_micros().to_string().into()),
    ])
}

/// CLUSTER, SHOAL.CLUSTER and SHOAL.RING: a cluster member's own commands.
async fn cluster_only(shared: &Shared, session: &Session, name: &str, args: &[Bytes]) -> Step {
    let Some(cluster) = &shared.cluster else {
        return err("ERR This instance has cluster support disabled");
    };
    match name {
        "cluster" => {
            let view = crate::redis_cluster::ClusterView {
                cluster_clients: shared.config.cluster_clients,
                namespace: session.namespace,
            };
            crate::redis_cluster::cluster_command(cluster, view, &args[1..]).await
        }
        "shoal.cluster" => Step::Reply(Reply::Verbatim {
            format: *b"txt",
            text: crate::routing::status_text(cluster),
        }),
        _ => crate::routing::ring_command(cluster, &args[1..]).await,
    }
}

fn auth(shared: &Shared, session: &mut Session, args: &[Bytes]) -> Reply {
    let Some(expected) = &shared.config.requirepass else {
        return Reply::error("ERR AUTH <password> called without any password configured for the default user. Are you sure your configuration is correct?");
    };
    let (user, pass) = match args {
        [pass] => (&b"default"[..], pass),
        [user, pass] => (&user[..], pass),
        _ => return Reply::error("ERR syntax error"),
    };
    if user == b"default" && pass[..] == *expected.as_bytes() {
        session.authenticated = true;
        Reply::ok()
    } else {
        Reply::error("WRONGPASS invalid username-password pair or user is disabled.")
    }
}

fn hello(shared: &Shared, session: &mut Session, args: &[Bytes]) -> Step {
    let mut protocol = session.protocol;
    let mut rest = args;
    if let Some(first) = args.first() {
        match parse_int(first) {
            Some(2) => protocol = Protocol::Resp2,
            Some(3) => protocol = Protocol::Resp3,
            Some(_) => return err("NOPROTO unsupported protocol version"),
            None => return err("ERR Protocol version is not an integer or out of range"),
        }
        rest = &args[1..];
    }
    let mut name = None;
    while !rest.is_empty() {
        match (lower(&rest[0]).as_str(), rest.len()) {
            ("auth", n) if n >= 3 => {
                if let Reply::Error(e) = auth(shared, session, &rest[1..3]) {
                    return err(e);
                }
                rest = &rest[3..];
            }
            ("setname", n) if n >= 2 => {
                name = Some(rest[1].clone());
                rest = &rest[2..];
            }
            _ => return syntax_error(),
        }
    }
    if !session.authenticated {
        return err("NOAUTH HELLO must be called with the client already authenticated, otherwise the HELLO <proto> AUTH <user> <pass> option can be used to authenticate the client and select the RESP protocol version at the same time");
    }
    session.protocol = protocol;
    if name.is_some() {
        session.name = name;
    }
    let proto_number = if protocol == Protocol::Resp3 { 3 } else { 2 };
    let s = |v: &str| Reply::Bulk(Bytes::from(v.to_string()));
    Step::Reply(Reply::Map(vec![
        (s("server"), s("redis")),
        (s("version"), s(REDIS_VERSION)),
        (s("proto"), Reply::Integer(proto_number)),
        (s("id"), Reply::Integer(session.id as i64)),
        (s("mode"), s("standalone")),
        (s("role"), s("master")),
        (s("modules"), Reply::Array(vec![])),
    ]))
}

fn command_info(spec: &CommandSpec) -> Reply {
    let s = |v: &str| Reply::Simple(v.to_string());
    Reply::Array(vec![
        Reply::Bulk(Bytes::from_static(spec.name.as_bytes())),
        Reply::Integer(spec.arity),
        Reply::Set(spec.flags.iter().map(|f| s(f)).collect()),
        Reply::Integer(spec.first_key),
        Reply::Integer(spec.last_key),
        Reply::Integer(spec.step),
        Reply::Set(vec![s(&format!("@{}", spec.group))]),
        Reply::Array(tips(spec.name).iter().map(|t| s(t)).collect()),
        Reply::Array(vec![]),
        Reply::Array(vec![]),
    ])
}

/// Redis's command tips (COMMAND INFO's eighth field) for the commands a
/// Redis Cluster client must send to every master and how it combines the
/// answers (redis-py reads them to fan out DBSIZE, KEYS, FLUSHDB, ...).
fn tips(name: &str) -> &'static [&'static str] {
    match name {
        "dbsize" => &["request_policy:all_shards", "response_policy:agg_sum"],
        "keys" => &["request_policy:all_shards", "nondeterministic_output_order"],
        "flushdb" | "flushall" => &["request_policy:all_shards", "response_policy:all_succeeded"],
        "scan" => &[
            "nondeterministic_output",
            "request_policy:special",
            "response_policy:special",
        ],
        "ping" => &["request_policy:all_shards", "response_policy:all_succeeded"],
        "mget" => &["request_policy:multi_shard"],
        "mset" => &[
            "request_policy:multi_shard",
            "response_policy:all_succeeded",
        ],
        "del" | "unlink" | "exists" | "touch" => {
            &["request_policy:multi_shard", "response_policy:agg_sum"]
        }
        "time" | "info" | "client" | "slowlog" | "latency" => &["nondeterministic_output"],
        _ => &[],
    }
}

fn command_docs(spec: &CommandSpec) -> Reply {
    let b = |v: &str| Reply::Bulk(Bytes::from(v.to_string()));
    Reply::Map(vec![
        (b("summary"), b(spec.summary)),
        (b("since"), b("1.0.0")),
        (b("group"), b(spec.group)),
    ])
}

fn command(args: &[Bytes]) -> Step {
    let sub = args.first().map(|a| lower(a));
    let wanted = |a: &[Bytes]| -> Vec<&'static CommandSpec> {
        if a.is_empty() {
            COMMANDS.iter().collect()
        } else {
            a.iter().filter_map(|n| lookup(n)).collect()
        }
    };
    match sub.as_deref() {
        None => Step::Reply(Reply::Array(COMMANDS.iter().map(command_info).collect())),
        Some("count") => Step::Reply(Reply::Integer(COMMANDS.len() as i64)),
        Some("info") => Step::Reply(Reply::Array(
            args[1..]
                .iter()
                .map(|n| lookup(n).map_or(Reply::NullArray, command_info))
                .collect(),
        )),
        Some("docs") => Step::Reply(Reply::Map(
            wanted(&args[1..])
                .into_iter()
                .map(|c| (Reply::Bulk(Bytes::from_static(c.name.as_bytes())), command_docs(c)))
                .collect(),
        )),
        Some("list") => Step::Reply(Reply::Array(
            COMMANDS
                .iter()
                .map(|c| Reply::Bulk(Bytes::from_static(c.name.as_bytes())))
                .collect(),
        )),
        Some(other) => err(format!(
            "ERR unknown subcommand '{other}'. Try COMMAND, COMMAND COUNT, COMMAND DOCS, COMMAND INFO, COMMAND LIST."
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::command_stats::COMMAND_KINDS_MAX;

    #[test]
    fn every_table_entry_has_its_own_counted_kind() {
        assert!(
            COMMANDS.len() <= COMMAND_KINDS_MAX,
            "raise COMMAND_KINDS_MAX"
        );
        for (i, spec) in COMMANDS.iter().enumerate() {
            assert_eq!(kind_of(spec), i, "{}", spec.name);
            assert_eq!(
                kind_of(lookup(spec.name.to_uppercase().as_bytes()).unwrap()),
                i
            );
        }
    }
}
