//! Criterion benches of the storage engine on real files (`FileDir` in a temp dir):
//! durable puts with group commit, the committer's CPU per batch (prepare and
//! publish, no fsync), point reads (whole sets, and GET's winner), recovery of 1M keys with and without
//! hint files, and compaction of mostly-dead segments.
//!
//! Run: `cargo bench -p shoal-bench --bench engine -- --warm-up-time 1 --measurement-time 2`.
//! `SHOAL_BENCH_RECOVERY_KEYS` overrides the 1M keys of the recovery bench.
//! Numbers are for reading, never for asserting.

use criterion::{
    black_box, criterion_group, criterion_main, BatchSize, BenchmarkId, Criterion, SamplingMode,
    Throughput,
};
use shoal_bench::{commit, key, load_keys, open_store, put, wall_ms, TempDir, NAMESPACE};
use shoal_engine::rng::SplitMix64;
use shoal_engine::store::CompactionReads;
use shoal_engine::{CompactionProgress, Store, StoreOptions, WriteOp};
use std::cell::OnceCell;

/// Keys the put bench draws from (overwrites read the current record, as SET does).
const PUT_KEYSPACE: u64 = 100_000;
/// Overwrites per batch in the prepare-and-publish bench.
const PREPARE_BATCH_OPS: u64 = 64;
/// Keys preloaded for the get bench.
const GET_KEYS: u64 = 100_000;
/// Keys in the recovery bench unless `SHOAL_BENCH_RECOVERY_KEYS` says otherwise.
const RECOVERY_KEYS_DEFAULT: u64 = 1_000_000;
/// Puts per synced batch when building fixtures.
const LOAD_BATCH_OPS: u64 = 1_000;
/// The compaction fixture: this many keys, each overwritten `COMPACTION_ROUNDS`
/// times, in segments of `COMPACTION_SEGMENT_SIZE_BYTES`.
const COMPACTION_KEYS: u64 = 10_000;
const COMPACTION_ROUNDS: u64 = 20;
const COMPACTION_SEGMENT_SIZE_BYTES: u64 = 4 << 20;
/// Work per `compaction_tick`, as the server's default `compaction_budget_bytes`.
const COMPACTION_BUDGET_BYTES: u64 = 4 << 20;
/// Live bytes per step, as the server's pacer takes them (`STEP_BYTES_MAX`).
const COMPACTION_STEP_BYTES: u64 = 2 << 20;
/// Ticks after which the compaction bench gives up (a bug, not a slow disk).
const COMPACTION_TICKS_MAX: u64 = 100_000;

/// Group commit as the committer does it: each iteration is one batch holding one
/// put from each of `writers` concurrent clients, prepared, synced, published.
fn durable_put(c: &mut Criterion) {
    let mut group = c.benchmark_group("durable_put");
    for writers in [1u64, 16, 64] {
        let dir = TempDir::new(&format!("put-{writers}"));
        let mut store = open_store(&dir, StoreOptions::default());
        let mut rng = SplitMix64::new(0x5EED ^ writers);
        group.throughput(Throughput::Elements(writers));
        group.bench_function(BenchmarkId::new("writers", writers), |b| {
            b.iter_batched(
                || -> Vec<WriteOp> { (0..writers).map(|_| put(rng.below(PUT_KEYSPACE))).collect() },
                |ops| commit(&mut store, &ops),
                BatchSize::SmallInput,
            )
        });
    }
    group.finish();
}

/// The committer's CPU work per batch, without the fsync: a batch of 64
/// overwrites of a store holding 100k keys, prepared and published.
fn prepare_publish(c: &mut Criterion) {
    let dir = TempDir::new("prepare-publish");
    let mut store = open_store(&dir, StoreOptions::default());
    load_keys(&mut store, PUT_KEYSPACE, LOAD_BATCH_OPS);
    let mut rng = SplitMix64::new(0xC0117);
    let mut group = c.benchmark_group("prepare_publish");
    group.throughput(Throughput::Elements(PREPARE_BATCH_OPS));
    group.bench_function(BenchmarkId::new("overwrites", PREPARE_BATCH_OPS), |b| {
        b.iter_batched(
            || -> Vec<WriteOp> {
                (0..PREPARE_BATCH_OPS)
                    .map(|_| put(rng.below(PUT_KEYSPACE)))
                    .collect()
            },
            |ops| {
                let batch = store.prepare(&ops, wall_ms());
                for result in store.publish(batch) {
                    black_box(result.expect("write applied"));
                }
            },
            BatchSize::SmallInput,
        )
    });
    group.finish();
}

/// Random point reads of a store holding 100k keys (values are read from the file).
fn get(c: &mut Criterion) {
    let dir = TempDir::new("get");
    let mut store = open_store(&dir, StoreOptions::default());
    load_keys(&mut store, GET_KEYS, LOAD_BATCH_OPS);
    let keys: Vec<Vec<u8>> = (0..GET_KEYS).map(key).collect();
    let mut rng = SplitMix64::new(0x6E7);
    let mut group = c.benchmark_group("get");
    group.throughput(Throughput::Elements(1));
    group.bench_function(BenchmarkId::new("random", GET_KEYS), |b| {
        b.iter(|| {
            let k = &keys[rng.below(GET_KEYS) as usize];
            let set = store.get(NAMESPACE, black_box(k)).expect("read");
            black_box(set.expect("key present"))
        })
    });
    // What GET reads: the winner's value only, through a borrowed view.
    group.bench_function(BenchmarkId::new("winner", GET_KEYS), |b| {
        b.iter(|| {
            let k = &keys[rng.below(GET_KEYS) as usize];
            let winner = store.get_winner(NAMESPACE, black_box(k), 0).expect("read");
            black_box(winner.expect("key present"))
        })
    });
    group.finish();
}

fn recovery_keys() -> u64 {
    match std::env::var("SHOAL_BENCH_RECOVERY_KEYS") {
        Ok(v) => v
            .parse()
            .unwrap_or_else(|_| panic!("SHOAL_BENCH_RECOVERY_KEYS={v:?} is not a number")),
        Err(_) => RECOVERY_KEYS_DEFAULT,
    }
}

/// `Store::open` of 1M keys written in synced batches (warm page cache): with the
/// hint files the sealed segments leave, then with them deleted (every segment is
/// scanned). The fixture is built lazily, so filtering the bench out skips it.
fn recovery(c: &mut Criterion) {
    let keys = recovery_keys();
    let fixture: OnceCell<TempDir> = OnceCell::new();
    let build = || {
        let dir = TempDir::new("recovery");
        let mut store = open_store(&dir, StoreOptions::default());
        load_keys(&mut store, keys, LOAD_BATCH_OPS);
        eprintln!(
            "recovery fixture: {keys} keys in {} segments, {} bytes",
            store.segment_count(),
            store.disk_usage_bytes().0
        );
        dir
    };
    let mut group = c.benchmark_group("recovery");
    group.sample_size(10);
    group.sampling_mode(SamplingMode::Flat);
    group.throughput(Throughput::Elements(keys));
    group.bench_function(BenchmarkId::new("open_with_hints", keys), |b| {
        let dir = fixture.get_or_init(build);
        b.iter_with_large_drop(|| open_store(dir, StoreOptions::default()))
    });
    group.bench_function(BenchmarkId::new("open_full_scan", keys), |b| {
        let dir = fixture.get_or_init(build);
        b.iter_batched(
            || {
                dir.remove_files_ending_with(".hint");
            },
            |()| open_store(dir, StoreOptions::default()),
            BatchSize::PerIteration,
        )
    });
    group.finish();
}

/// `compaction_tick` until `Idle`, on a copy of a store whose sealed segments are
/// mostly dead (every key overwritten many times). The fixture (built lazily) prints
/// how many bytes are dead; the copy and the open are not timed.
fn compaction(c: &mut Criterion) {
    let options = StoreOptions {
        segment_size_bytes: COMPACTION_SEGMENT_SIZE_BYTES,
        ..StoreOptions::default()
    };
    let fixture: OnceCell<TempDir> = OnceCell::new();
    let build = || {
        let dir = TempDir::new("compaction-template");
        let mut store = open_store(&dir, options.clone());
        for round in 0..COMPACTION_ROUNDS {
            let mut start = 0;
            while start < COMPACTION_KEYS {
                let end = (start + LOAD_BATCH_OPS).min(COMPACTION_KEYS);
                let ops: Vec<WriteOp> = (start..end)
                    .map(|i| {
                        let mut op = put(i);
                        op.value = Some(shoal_bench::value(i + round).into());
                        op
                    })
                    .collect();
                commit(&mut store, &ops);
                start = end;
            }
        }
        let (total_bytes, dead_bytes) = store.disk_usage_bytes();
        eprintln!(
            "compaction fixture: {} segments, {total_bytes} bytes written, {dead_bytes} dead",
            store.segment_count()
        );
        dir
    };
    let work = TempDir::new("compaction-work");
    let mut group = c.benchmark_group("compaction");
    group.sample_size(10);
    group.sampling_mode(SamplingMode::Flat);
    group.bench_function("until_idle", |b| {
        let template = fixture.get_or_init(build);
        b.iter_batched(
            || {
                work.copy_files_from(template);
                open_store(&work, options.clone())
            },
            |mut store| {
                for _ in 0..COMPACTION_TICKS_MAX {
                    match store.compaction_tick(COMPACTION_BUDGET_BYTES) {
                        Ok(CompactionProgress::Idle) => return store,
                        Ok(_) => {}
                        Err(e) => panic!("compaction failed: {e}"),
                    }
                }
                panic!("compaction not idle after {COMPACTION_TICKS_MAX} ticks");
            },
            BatchSize::PerIteration,
        )
    });
    // The time the server's committer holds the store's write lock over a
    // compaction of large values (`large_value_fixture`): every step's work
    // and each finished segment's sync (`records_under_lock`, as before
    // the read-ahead), or only the appending and the segment's removal, once
    // the records were read ahead and the copies synced off the lock
    // (`read_ahead`). The directory walk that starts each segment runs under
    // a shared lock in both, and is not timed.
    let large: OnceCell<TempDir> = OnceCell::new();
    for read_ahead in [false, true] {
        let name = if read_ahead {
            "read_ahead"
        } else {
            "records_under_lock"
        };
        group.bench_function(BenchmarkId::new("write_lock_held", name), |b| {
            let template = large.get_or_init(|| large_value_fixture(&options));
            b.iter_custom(|iters| {
                let mut held = std::time::Duration::ZERO;
                for _ in 0..iters {
                    work.copy_files_from(template);
                    let mut store = open_store(&work, options.clone());
                    held += compact_timing_the_lock(&mut store, read_ahead);
                }
                held
            })
        });
    }
    group.finish();
}

/// Keys of the large-value compaction fixture, and their values' size.
const LARGE_KEYS: u64 = 4_096;
const LARGE_VALUE_BYTES: usize = 4_096;

/// `LARGE_KEYS` values of `LARGE_VALUE_BYTES` (16 MiB), then every other one
/// written again: the first segments are half dead, so compaction moves about
/// 8 MiB of live records in steps of `COMPACTION_STEP_BYTES`.
fn large_value_fixture(options: &StoreOptions) -> TempDir {
    let dir = TempDir::new("compaction-large");
    let mut store = open_store(&dir, options.clone());
    for (round, step) in [(0u8, 1usize), (1, 2)] {
        let keys: Vec<u64> = (0..LARGE_KEYS).step_by(step).collect();
        for chunk in keys.chunks(256) {
            let ops: Vec<WriteOp> = chunk
                .iter()
                .map(|&i| {
                    let value = vec![b'a' + (i % 26) as u8 + round; LARGE_VALUE_BYTES];
                    WriteOp::put(NAMESPACE, key(i).into(), value.into())
                })
                .collect();
            commit(&mut store, &ops);
        }
    }
    let (total_bytes, dead_bytes) = store.disk_usage_bytes();
    eprintln!("large-value compaction fixture: {total_bytes} bytes written, {dead_bytes} dead");
    dir
}

/// Compact `store` until idle as the server's committer does, returning the
/// time spent where it would hold the write lock.
fn compact_timing_the_lock(store: &mut Store, read_ahead: bool) -> std::time::Duration {
    let mut held = std::time::Duration::ZERO;
    for _ in 0..COMPACTION_TICKS_MAX {
        let plan = store.compaction_plan();
        let copies = read_ahead
            .then(|| store.compaction_reads(plan.as_ref(), COMPACTION_STEP_BYTES))
            .flatten()
            .map(CompactionReads::copy);
        let started = std::time::Instant::now();
        let step = store.compaction_tick_spending(COMPACTION_STEP_BYTES, plan, copies);
        held += started.elapsed();
        if let Some(owed) = store.compaction_sync_owed() {
            let sync_started = std::time::Instant::now();
            let synced = owed.sync();
            if !read_ahead {
                held += sync_started.elapsed();
            }
            let started = std::time::Instant::now();
            store.compaction_synced(owed, synced).expect("synced");
            held += started.elapsed();
        }
        match step {
            Ok((CompactionProgress::Idle, _)) => return held,
            Ok(_) => {}
            Err(e) => panic!("compaction failed: {e}"),
        }
    }
    panic!("compaction not idle after {COMPACTION_TICKS_MAX} ticks");
}

/// Keys in the marker-listing bench, and how many of them are deleted.
const MARKER_BENCH_KEYS: u64 = 100_000;
const MARKER_BENCH_DELETED: u64 = 100;

/// What a marker-collection round asks of each store: the delete markers of
/// every slot (`Store::delete_markers_in_slots`), here of a store holding
/// 100k keys of which 100 are deleted, on a cluster node's store (markers
/// kept).
fn delete_markers(c: &mut Criterion) {
    let dir = TempDir::new("markers");
    let options = StoreOptions {
        delete_markers_collectable: false,
        ..StoreOptions::default()
    };
    let mut store = open_store(&dir, options);
    load_keys(&mut store, MARKER_BENCH_KEYS, LOAD_BATCH_OPS);
    let step = MARKER_BENCH_KEYS / MARKER_BENCH_DELETED;
    let deletes: Vec<WriteOp> = (0..MARKER_BENCH_DELETED)
        .map(|i| WriteOp::delete(NAMESPACE, key(i * step).into()))
        .collect();
    commit(&mut store, &deletes);
    let after = shoal_engine::Hlc(u64::MAX);
    let mut group = c.benchmark_group("delete_markers");
    group.bench_function(BenchmarkId::new("all_slots", MARKER_BENCH_KEYS), |b| {
        b.iter(|| {
            let mut reads_left = usize::MAX;
            let found = store.delete_markers_in_slots(
                0..=u16::MAX,
                after,
                usize::MAX,
                &mut reads_left,
                |_, _| false,
            );
            assert_eq!(found.len() as u64, MARKER_BENCH_DELETED);
            black_box(found)
        })
    });
    group.finish();
}

criterion_group!(
    benches,
    durable_put,
    prepare_publish,
    get,
    recovery,
    compaction,
    delete_markers
);
criterion_main!(benches);
