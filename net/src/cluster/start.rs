//! Starting the driver: check the configuration, load or build the cluster map,
//! listen for peers, and check this node's incarnation against what its peers
//! knew of it (a replaced disk takes a fresh dot actor) before anything mints.

use super::*;

impl Cluster {
    /// Load this node's cluster map (or build the first ring from the member list,
    /// or fetch the map from the seeds when joining), enable digests on the store,
    /// and start the peer listener, the failure detector, anti-entropy and handoff.
    pub async fn start(
        config: ClusterConfig,
        storage: Storage,
        hints: Option<Storage>,
        clock: Arc<dyn ClusterClock>,
        incarnation: u64,
    ) -> Result<Arc<Cluster>, StartError> {
        check_config(&config).map_err(StartError::Config)?;
        let me = config.node_id;
        let dir = storage.read(|s| s.dir());
        let saved = cluster_map::load(dir.as_ref()).map_err(StartError::MapFile)?;
        let keys = storage.with_store_mut(|s| s.enable_digests());
        tracing::info!("anti-entropy digests built over {keys} keys");
        let listener = TcpListener::bind(&config.self_addr.peer)
            .await
            .map_err(|cause| StartError::Listen {
                address: config.self_addr.peer.clone(),
                cause,
            })?;
        let bootstrap = match &saved {
            Some(map) => Arc::new(map.clone()),
            None if config.members.contains_key(&me) => {
                let ring = Ring::new(
                    config.partition_count,
                    config.replicas_n,
                    config.members.keys().copied(),
                )
                .map_err(|e| StartError::FirstRing(MapError::Placement(e)))?;
                let addresses = config
                    .members
                    .iter()
                    .map(|(id, a)| (*id, a.client.clone()))
                    .collect();
                let map = ClusterMap::bootstrap(ring, addresses).map_err(StartError::FirstRing)?;
                cluster_map::save(dir.as_ref(), &map).map_err(StartError::MapFile)?;
                Arc::new(map)
            }
            // Joining: no ring of our own until a seed answers.
            None => Arc::new(
                ClusterMap::bootstrap(
                    Ring::placeholder(config.partition_count, me)
                        .map_err(|e| StartError::FirstRing(MapError::Placement(e)))?,
                    [(me, config.self_addr.client.clone())].into(),
                )
                .map_err(StartError::FirstRing)?,
            ),
        };
        let joining = saved.is_none() && !config.members.contains_key(&me);
        let now = clock.monotonic_ms();
        let detector = Detector::new(me, bootstrap.nodes(), config.detector, now);
        let (dir_id, new_dir) =
            directory_id(dir.as_ref(), clock.random_u64() | 1).map_err(|cause| {
                StartError::Disk {
                    file: DIRECTORY_ID_FILE,
                    cause,
                }
            })?;
        // What this node heard of its peers' lives before it restarted: a peer
        // back on an empty disk while this node was down must still learn it.
        let lives = peer_lives::load(dir.as_ref()).unwrap_or_else(|e| {
            tracing::warn!("{e}; starting without what it knew of peers' directories");
            Lives::default()
        });
        let restoring = restoring_at_start(dir.as_ref(), &storage, me)?;
        let fingerprint = bootstrap.fingerprint();
        let cluster = Arc::new(Cluster {
            config,
            map: Mutex::new((bootstrap, fingerprint)),
            gate: tokio::sync::RwLock::new(()),
            dir,
            storage,
            clock,
            detector: Mutex::new(detector),
            incarnation: AtomicU64::new(incarnation),
            ready: AtomicBool::new(false),
            ready_changed: tokio::sync::Notify::new(),
            dir_id,
            lives: Mutex::new(lives),
            peers: Mutex::new(BTreeMap::new()),
            refusals: Mutex::default(),
            handoff_now: Mutex::new(None),
            unreadable_warned_version: AtomicU64::new(0),
            hint_owners: Mutex::new(hints.as_ref().map(held_hint_owners).unwrap_or_default()),
            hints,
            hint_lock: tokio::sync::Mutex::new(()),
            ring_catch_up: tokio::sync::Mutex::new(()),
            lag: Mutex::new(BTreeMap::new()),
            agreed_markers: Mutex::new(Agreed::default()),
            marker_cursor: AtomicU64::new(0),
            stats: ClusterStats::default(),
            restoring: AtomicBool::new(restoring),
            restored_from: Mutex::new(RestoreProgress::default()),
            clock_offsets: Mutex::new(BTreeMap::new()),
        });
        // Peers are served during the check (they may be checking too, on a cold
        // start of the whole cluster), but a Coordinate, which mints dots, waits
        // for it to end.
        tokio::spawn(cluster.clone().serve_peers(listener));
        cluster.check_incarnation(new_dir).await?;
        if new_dir {
            save_directory_id(cluster.dir.as_ref(), dir_id).map_err(|cause| StartError::Disk {
                file: DIRECTORY_ID_FILE,
                cause,
            })?;
        }
        cluster.ready.store(true, Ordering::Release);
        cluster.ready_changed.notify_waiters();
        if joining {
            cluster.fetch_map_from_seeds().await;
        }
        cluster.spawn_background();
        Ok(cluster)
    }

    /// The node's background loops: failure detection, anti-entropy, handoff
    /// and (with a hint store) hint delivery.
    fn spawn_background(self: &Arc<Self>) {
        tokio::spawn(self.clone().run_detector());
        tokio::spawn(self.clone().run_anti_entropy());
        tokio::spawn(self.clone().run_handoff());
        if self.hints.is_some() {
            tokio::spawn(self.clone().run_hint_delivery());
        }
    }

    /// Before minting any dot: if a peer knew this node on another data directory
    /// (this one replaced it: a lost, wiped or swapped disk) and this directory has
    /// no actor of its own yet, take a fresh actor and an incarnation past the old
    /// one. The old life's dots live on in the peers' data; a new dot of the old
    /// actor would reuse or cover them. Waits up to `incarnation_check_wait_ms`
    /// for some peer to answer (none may be up yet when a cluster starts).
    pub(super) async fn check_incarnation(
        self: &Arc<Self>,
        new_dir: bool,
    ) -> Result<(), StartError> {
        let peers = self.other_nodes();
        if peers.is_empty() {
            return Ok(());
        }
        match self.incarnation_known_to(&peers).await {
            Some(k) if k >= 1 => {
                let why = format!("its data directory is not the one the cluster knew it on (up to incarnation {k}): a lost, wiped or replaced disk");
                if self.take_fresh_actor(k, &why)? {
                    self.stats.earlier_life_seen.store(k, Ordering::Relaxed);
                }
                Ok(())
            }
            Some(_) => Ok(()),
            None if new_dir => {
                // Nobody answered, and this directory is new: it may have
                // replaced one the cluster knew, whose dots the old actor
                // would reissue (fresh cluster seed 20794054385: back on an
                // empty disk with its peers cut off, a node minted dots its
                // old life had acknowledged). A fresh actor covers nothing
                // of an old life; the node restores as after a lost disk.
                self.stats.life_unanswered.store(true, Ordering::Relaxed);
                let why = format!(
                    "no peer answered within {} ms, so none could say whether its new data directory replaced one the cluster knew",
                    self.config.incarnation_check_wait_ms
                );
                self.take_fresh_actor(self.incarnation(), &why).map(|_| ())
            }
            None => {
                tracing::info!(
                    "no peer answered within {} ms; starting as incarnation {}",
                    self.config.incarnation_check_wait_ms,
                    self.incarnation()
                );
                Ok(())
            }
        }
    }

    /// Every node of the map but this one.
    fn other_nodes(&self) -> Vec<NodeId> {
        (self.map().nodes().into_iter())
            .filter(|n| *n != self.me())
            .collect()
    }

    /// Unless this directory already took its own actor, take a fresh one
    /// and an incarnation past `past`, and restore, logging `why`. True when
    /// it took one.
    fn take_fresh_actor(&self, past: u64, why: &str) -> Result<bool, StartError> {
        if self.actor() != self.me() {
            return Ok(false);
        }
        let own = self.incarnation();
        // A fresh actor id for its dots: node id in the low 24 bits, a
        // random epoch (1..=255) above. See `Store::adopt_actor`.
        let epoch = 1 + (self.clock.random_u64() % 255) as u32;
        let actor = self.me() | (epoch << ACTOR_EPOCH_SHIFT);
        let dir = self.dir.clone();
        let raised = self
            .storage
            .with_store_mut(|s| {
                // Restoring as after a rebuild: this directory lacks what
                // the old one acknowledged.
                shoal_engine::disk::write_checked_file(
                    dir.as_ref(),
                    RESTORING_FILE,
                    &actor.to_le_bytes(),
                )?;
                s.adopt_actor(actor)?;
                s.raise_incarnation(past + 1)
            })
            .map_err(|cause| StartError::Disk {
                file: "ACTOR and INCARNATION",
                cause,
            })?;
        self.restoring.store(true, Ordering::Release);
        self.incarnation.store(raised, Ordering::Relaxed);
        tracing::warn!(
            "node {}: {why}; starting as incarnation {raised} (was {own}), minting its dots as actor {actor}, and anti-entropy restores its replicas",
            self.me()
        );
        Ok(true)
    }

    /// The highest incarnation of this node that any of `peers` knew, asked
    /// of all of them at once, again every probe interval until one answers or
    /// the check's wait is over (`None`: nobody answered).
    async fn incarnation_known_to(self: &Arc<Self>, peers: &[NodeId]) -> Option<u64> {
        let deadline_ms = self.now_ms() + self.config.incarnation_check_wait_ms;
        loop {
            let mut answers = Vec::new();
            for peer in peers {
                let cluster = self.clone();
                let peer = *peer;
                answers.push(tokio::spawn(async move {
                    cluster.known_incarnation(peer).await
                }));
            }
            let mut known: Option<u64> = None;
            for answer in answers {
                if let Ok(Some(k)) = answer.await {
                    known = Some(known.unwrap_or(0).max(k));
                }
            }
            if known.is_some() || self.now_ms() >= deadline_ms {
                return known;
            }
            tokio::time::sleep(Duration::from_millis(
                self.config.detector.probe_interval_ms,
            ))
            .await;
        }
    }

    /// What `peer` knew of this node's incarnation before we pinged it (None:
    /// no answer).
    pub(super) async fn known_incarnation(self: &Arc<Self>, peer: NodeId) -> Option<u64> {
        let timeout = self.config.detector.probe_interval_ms * 2;
        match self.call(peer, self.ping_request(), timeout).await {
            Ok(Response::Pong {
                incarnation,
                dir_id,
                your_incarnation,
                ..
            }) => {
                self.record_life(peer, dir_id, incarnation);
                self.heard(peer, incarnation);
                Some(your_incarnation)
            }
            _ => None,
        }
    }

    /// Remember that `peer` runs on directory `dir_id` in `incarnation`, and save
    /// what is new ([`peer_lives`]: once per peer restart). Saved under the lock,
    /// so a later record never lands before an earlier one.
    pub(super) fn record_life(&self, peer: NodeId, dir_id: u64, incarnation: u64) {
        let mut lives = lock(&self.lives);
        if lives.record(peer, dir_id, incarnation) {
            if let Err(e) = peer_lives::save(self.dir.as_ref(), &lives) {
                tracing::warn!("cannot save what this node knows of peers' directories: {e}");
            }
        }
    }

    /// A joining node's first map: ask each seed in turn until one answers.
    pub(super) async fn fetch_map_from_seeds(self: &Arc<Self>) {
        let seeds: Vec<NodeId> = self
            .config
            .members
            .keys()
            .copied()
            .filter(|n| *n != self.me())
            .collect();
        let mut attempt = 0u64;
        loop {
            let mut last_failure = String::from("no seed listed");
            for seed in &seeds {
                let mine = (*self.map()).clone();
                let request = Request::MapSync { map: mine };
                let answer = self
                    .call(*seed, request, self.config.request_timeout_ms)
                    .await;
                if let Err(e) = &answer {
                    last_failure = format!("seed {seed}: {e}");
                }
                if let Ok(Response::Map(theirs)) = answer {
                    if theirs.check().is_ok() && self.adopt(&theirs).await {
                        tracing::info!(
                            "joined the cluster's gossip through seed {seed}: ring version {}, {} members; waiting for an operator's `shoal cluster join`",
                            theirs.version(),
                            theirs.ring().members().len()
                        );
                        return;
                    }
                }
            }
            attempt += 1;
            if attempt % 10 == 1 {
                tracing::warn!(
                    "no seed has answered with the cluster map yet ({last_failure}); the Redis port opens once one does (check --members and --cluster-secret); retrying"
                );
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
}

/// Whether the node starts restoring from its replicas: its directory is
/// (`RESTORING`), or its store's open cut a tail of its log (`CUT-TAIL`),
/// so it may lack writes it acknowledged, like one whose damage was set
/// aside: it is no handoff source and votes no on markers until restored
/// (cluster seed 20031095: a cut tail took a write, the node served a
/// handoff scan without it, and the incoming owner's pull of n - w + 1
/// missed it).
fn restoring_at_start(
    dir: &dyn DiskDir,
    storage: &Storage,
    me: NodeId,
) -> Result<bool, StartError> {
    let restoring = restoring_actor(dir)
        .map_err(|cause| StartError::Disk {
            file: RESTORING_FILE,
            cause,
        })?
        .is_some()
        || storage.read(|s| s.may_lack_acknowledged_writes());
    if restoring {
        tracing::warn!(
            "node {me} is restoring its data from its replicas: it serves reads and writes, but no handoff and no marker collection until every other member's copies are merged here"
        );
    }
    Ok(restoring)
}
