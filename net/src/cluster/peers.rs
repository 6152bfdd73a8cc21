//! Peer connections: dialling and calling a peer (with its stall detection),
//! accepting and serving peer connections, probes, and the detector loop that
//! feeds the sans-IO failure detector.

use super::*;

/// One peer: a lazily (re)dialled, multiplexed connection.
pub(super) struct PeerClient {
    node: NodeId,
    addr: String,
    conn: tokio::sync::Mutex<Option<Arc<Conn>>>,
    last_connect_failure_ms: AtomicU64,
    /// A failed TLS handshake was logged; cleared by the next connection made.
    tls_failure_logged: AtomicBool,
    next_id: AtomicU64,
}

impl Cluster {
    /// The client for `node`, made on first use from the map's address (or the
    /// seed list's, before a joining node has the map).
    pub(super) fn peer(&self, node: NodeId) -> Option<Arc<PeerClient>> {
        let mut peers = lock(&self.peers);
        if let Some(peer) = peers.get(&node) {
            return Some(peer.clone());
        }
        let addr = match self.map().address(node) {
            Some(client) => member_addr(client).ok()?.peer,
            None => self.config.members.get(&node)?.peer.clone(),
        };
        let client = Arc::new(PeerClient {
            node,
            addr,
            conn: tokio::sync::Mutex::new(None),
            last_connect_failure_ms: AtomicU64::new(0),
            tls_failure_logged: AtomicBool::new(false),
            next_id: AtomicU64::new(1),
        });
        peers.insert(node, client.clone());
        Some(client)
    }

    pub(super) async fn connection(&self, peer: &PeerClient) -> Result<Arc<Conn>, CallError> {
        let mut guard = peer.conn.lock().await;
        let now = self.now_ms();
        if let Some(conn) = guard.as_ref() {
            let stalled = conn.stalled(now, self.config.peer_stall_ms)
                && !cfg!(feature = "bug-keep-stalled-connections");
            if !conn.closed.load(Ordering::Acquire) && !stalled {
                return Ok(conn.clone());
            }
            if stalled {
                // Its requests fail as lost (outcome unknown); a fresh dial
                // goes through at once if the link is back.
                self.stats
                    .peer_connections_stalled
                    .fetch_add(1, Ordering::Relaxed);
                tracing::info!("node {}: connection stalled; dialling again", peer.node);
                conn.give_up();
            }
        }
        *guard = None;
        let failed_at = peer.last_connect_failure_ms.load(Ordering::Relaxed);
        if failed_at != 0 && now < failed_at + RECONNECT_BACKOFF_MS {
            return Err(CallError::Connect("recently unreachable".into()));
        }
        let clock = self.clock.clone();
        let mut random = move || clock.random_u64();
        let dial = peer::dial(
            &peer.addr,
            self.me(),
            peer.node,
            self.config.secret.as_bytes(),
            self.config.peer_tls.as_deref(),
            &mut random,
        );
        let result =
            tokio::time::timeout(Duration::from_millis(self.config.connect_timeout_ms), dial).await;
        match result {
            Ok(Ok((mut reader, mut writer))) => {
                peer.last_connect_failure_ms.store(0, Ordering::Relaxed);
                peer.tls_failure_logged.store(false, Ordering::Relaxed);
                reader.set_body_max_bytes(self.config.peer_frame_body_max_bytes);
                writer.set_body_max_bytes(self.config.peer_frame_body_max_bytes);
                let conn = spawn_connection(reader, writer, self.clock.clone());
                *guard = Some(conn.clone());
                Ok(conn)
            }
            Ok(Err(e)) => {
                // A certificate or a plain peer, which no retry mends: said
                // once, until a connection is made again.
                if matches!(e, PeerError::Tls(_))
                    && !peer.tls_failure_logged.swap(true, Ordering::Relaxed)
                {
                    tracing::warn!("cannot connect to node {}: {e}", peer.node);
                }
                peer.last_connect_failure_ms
                    .store(now.max(1), Ordering::Relaxed);
                Err(CallError::Connect(e.to_string()))
            }
            Err(_) => {
                peer.last_connect_failure_ms
                    .store(now.max(1), Ordering::Relaxed);
                Err(CallError::Connect("connect timed out".into()))
            }
        }
    }

    /// One request to one peer, bounded by `timeout_ms`.
    pub async fn call(
        &self,
        node: NodeId,
        body: Request,
        timeout_ms: u64,
    ) -> Result<Response, CallError> {
        let peer = self
            .peer(node)
            .ok_or_else(|| CallError::Connect(format!("node {node} has no known address")))?;
        let deadline = Duration::from_millis(timeout_ms);
        let work = async {
            let conn = self.connection(&peer).await?;
            let id = peer.next_id.fetch_add(1, Ordering::Relaxed);
            let (tx, rx) = oneshot::channel();
            lock(&conn.pending).insert(id, (self.now_ms(), tx));
            let envelope = Envelope::Request {
                id,
                from: self.me(),
                body,
            };
            if conn.send.send(envelope).await.is_err() {
                return Err(CallError::Lost("connection closed".into()));
            }
            let answer = rx
                .await
                .map_err(|_| CallError::Lost("connection closed".into()));
            if answer.is_err() {
                lock(&conn.pending).remove(&id);
            }
            answer
        };
        match tokio::time::timeout(deadline, work).await {
            Ok(result) => result,
            Err(_) => Err(CallError::Timeout),
        }
    }

    pub(super) async fn serve_peers(self: Arc<Self>, listener: TcpListener) {
        loop {
            let (stream, addr) = match listener.accept().await {
                Ok(accepted) => accepted,
                Err(e) => {
                    tracing::warn!("peer accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let cluster = self.clone();
            tokio::spawn(async move { cluster.peer_connection(stream, addr.to_string()).await });
        }
    }

    pub(super) async fn peer_connection(
        self: Arc<Self>,
        stream: tokio::net::TcpStream,
        addr: String,
    ) {
        let clock = self.clock.clone();
        let mut random = move || clock.random_u64();
        // Any node that proves the secret may talk: a joining node is not in the
        // map until an operator admits it, but it must be able to fetch the map.
        let me = self.me();
        let handshake = peer::accept(
            stream,
            me,
            self.config.secret.as_bytes(),
            self.config.peer_tls.as_deref(),
            |node| node != me,
            &mut random,
        );
        let timeout = Duration::from_millis(self.config.connect_timeout_ms.max(1000));
        let (node, mut reader, mut writer) = match tokio::time::timeout(timeout, handshake).await {
            Ok(Ok(accepted)) => accepted,
            Ok(Err(e)) => return self.refused(&addr, &e.to_string()),
            Err(_) => return self.refused(&addr, "handshake timed out"),
        };
        reader.set_body_max_bytes(self.config.peer_frame_body_max_bytes);
        writer.set_body_max_bytes(self.config.peer_frame_body_max_bytes);
        let (send, mut queue) = mpsc::channel::<Envelope>(PEER_SEND_QUEUE_MAX);
        let writing = tokio::spawn(async move { writer.pump(&mut queue).await });
        self.serve_requests(node, &addr, reader, send).await;
        // The peer dials again when it finds this connection stalled; a writer
        // stuck on a dead socket must not outlive it.
        writing.abort();
    }

    /// Count a refused inbound connection, and log it unless its host was
    /// logged in the last `REFUSAL_LOG_INTERVAL_MS` (see `refusals`).
    fn refused(&self, addr: &str, why: &str) {
        self.stats
            .peer_auth_refusals
            .fetch_add(1, Ordering::Relaxed);
        let now_ms = self.clock.monotonic_ms();
        match lock(&self.refusals).refused(addr, now_ms) {
            Some(0) => tracing::warn!("refused peer connection from {addr}: {why}"),
            Some(unlogged) => tracing::warn!(
                "refused peer connection from {addr}: {why} ({unlogged} more from its host since the last such line)"
            ),
            None => {}
        }
    }

    /// Answer the requests of one inbound peer connection until it closes, fails,
    /// or stays silent for `PEER_IDLE_STALLS` stall periods (the peer pings every
    /// probe interval, so a silent connection is one it has given up on).
    pub(super) async fn serve_requests(
        self: &Arc<Self>,
        node: NodeId,
        addr: &str,
        mut reader: PeerReader,
        send: mpsc::Sender<Envelope>,
    ) {
        let permits = Arc::new(tokio::sync::Semaphore::new(
            self.config.peer_requests_in_flight_max,
        ));
        let idle_max = Duration::from_millis(self.config.peer_stall_ms * PEER_IDLE_STALLS);
        loop {
            let Ok(received) = tokio::time::timeout(idle_max, reader.recv()).await else {
                tracing::info!("closing the silent peer connection from node {node} ({addr})");
                return;
            };
            let envelope = match received {
                Ok(envelope) => envelope,
                Err(PeerError::Io(_)) => return,
                Err(e) => {
                    self.stats
                        .peer_frames_refused
                        .fetch_add(1, Ordering::Relaxed);
                    tracing::warn!("closing peer connection from node {node} ({addr}): {e}");
                    return;
                }
            };
            let Envelope::Request { id, from, body } = envelope else {
                tracing::warn!("node {node} sent a response on an inbound connection; closing it");
                return;
            };
            if from != node {
                tracing::warn!("node {node} sent a request as node {from}; closing its connection");
                return;
            }
            let Ok(permit) = permits.clone().acquire_owned().await else {
                return;
            };
            let cluster = self.clone();
            let send = send.clone();
            tokio::spawn(async move {
                let body = cluster.handle(node, body).await;
                let _ = send.send(Envelope::Response { id, body }).await;
                drop(permit);
            });
        }
    }

    /// A ping: this life's incarnation and directory, and the map it routes by.
    pub(super) fn ping_request(&self) -> Request {
        let (map_version, map_fingerprint) = self.map_summary();
        Request::Ping {
            incarnation: self.incarnation(),
            dir_id: self.dir_id,
            map_version,
            map_fingerprint,
        }
    }

    /// Ping `node` directly; its incarnation when it answered in time.
    pub(super) async fn ping(self: &Arc<Self>, node: NodeId) -> Option<u64> {
        let timeout = self.config.detector.probe_interval_ms * 2;
        let ping = self.ping_request();
        let sent_wall_ms = self.clock.wall_ms();
        let Ok(Response::Pong {
            incarnation,
            dir_id,
            map_version,
            map_fingerprint,
            wall_ms,
            ..
        }) = self.call(node, ping, timeout).await
        else {
            return None;
        };
        // The answer was stamped between our send and our receipt: its clock
        // minus our midpoint, give or take half the round trip.
        let received_wall_ms = self.clock.wall_ms();
        let round_trip_ms = received_wall_ms.saturating_sub(sent_wall_ms);
        let midpoint_ms = sent_wall_ms + round_trip_ms / 2;
        let offset_ms = wall_ms as i64 - midpoint_ms as i64;
        lock(&self.clock_offsets).insert(node, (offset_ms, round_trip_ms.div_ceil(2)));
        self.record_life(node, dir_id, incarnation);
        self.heard(node, incarnation);
        self.compare_maps(node, map_version, map_fingerprint);
        Some(incarnation)
    }

    pub(super) fn heard(&self, node: NodeId, incarnation: u64) {
        let now = self.now_ms();
        if let Some(DetectorEvent::Changed { node, from, to }) =
            lock(&self.detector).heard(node, incarnation, now)
        {
            tracing::info!("node {node}: {} -> {}", from.as_str(), to.as_str());
        }
    }

    pub(super) async fn run_detector(self: Arc<Self>) {
        let interval_ms = (self.config.detector.probe_interval_ms / 2).max(10);
        loop {
            let events = lock(&self.detector).tick(self.now_ms());
            for event in events {
                match event {
                    DetectorEvent::Probe(node) => {
                        let cluster = self.clone();
                        tokio::spawn(async move { cluster.ping(node).await });
                    }
                    DetectorEvent::ProbeIndirect { target, via } => {
                        for helper in via {
                            let cluster = self.clone();
                            tokio::spawn(async move {
                                // The helper's own ping may take its full timeout.
                                let timeout = cluster.config.detector.probe_interval_ms * 3;
                                let ask = Request::PingReq { target };
                                if let Ok(Response::Vouch {
                                    answered: Some(incarnation),
                                }) = cluster.call(helper, ask, timeout).await
                                {
                                    cluster
                                        .stats
                                        .indirect_vouches
                                        .fetch_add(1, Ordering::Relaxed);
                                    let now = cluster.now_ms();
                                    let changed = lock(&cluster.detector).heard_indirectly(
                                        target,
                                        incarnation,
                                        now,
                                    );
                                    if let Some(DetectorEvent::Changed { node, from, to }) = changed
                                    {
                                        tracing::info!(
                                            "node {node}: {} -> {} (node {helper} reaches it)",
                                            from.as_str(),
                                            to.as_str()
                                        );
                                    }
                                }
                            });
                        }
                    }
                    DetectorEvent::Changed { node, from, to } => {
                        tracing::info!("node {node}: {} -> {}", from.as_str(), to.as_str());
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(interval_ms)).await;
        }
    }
}
