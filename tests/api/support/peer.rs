//! A test-only WebRTC peer that speaks the relayed half of `carewire.consult.v1`.
//!
//! This module owns one real `webrtc` 0.21 peer connection per [`Peer`], bound to
//! 127.0.0.1 only (host candidates on loopback, no STUN needed), with one data channel
//! labelled `chat` for proving that media-plane traffic flows. It runs the W3C "perfect
//! negotiation" pattern exactly as signaling/PROTOCOL.md describes it for browsers, so
//! consult tests can put two of these behind the server and watch them connect.
//!
//! It deliberately knows nothing about WebSockets, ids or seats: [`Peer::next_outgoing`]
//! yields messages in the protocol's client form *without* `id` and `to`, and
//! [`Peer::handle_relayed`] takes the server's relayed form (the `from` field is ignored).
//! The caller does the addressing. It depends on no other support module, because it is
//! included on its own as `#[path = "support/peer.rs"] mod peer;`.
//!
//! Shape: every negotiation step (offers, answers, rollbacks, remote candidates, and
//! labelling local candidates with their ufrag) runs on one task, the negotiator, fed by
//! a command queue. Running them one at a time is what makes W3C's `makingOffer` flag
//! unnecessary here (an offer is created, applied and queued for sending in a single
//! step), and it keeps the outgoing order right: an offer is queued before any
//! candidate gathered for it, because gathering only starts once the offer is applied
//! and the candidate then waits in the queue behind the step that queues the offer.
//! The `webrtc` event handler only forwards events into that queue and never awaits
//! the connection, since it runs on the connection's own driver task.

use std::collections::HashSet;
use std::fmt;
use std::sync::{Arc, Mutex as StdMutex};
use std::time::Duration;

use anyhow::{Context as _, anyhow, bail};
use serde_json::{Map, Value, json};
use tokio::sync::{Mutex, mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use webrtc::data_channel::{DataChannel, DataChannelEvent};
use webrtc::peer_connection::{
    PeerConnection, PeerConnectionBuilder, PeerConnectionEventHandler, RTCConfigurationBuilder,
    RTCIceCandidateInit, RTCIceGatheringState, RTCIceServer, RTCPeerConnectionIceEvent,
    RTCPeerConnectionState, RTCSessionDescription,
};

/// The label of the data channel [`Peer::open_channel`] creates.
pub const CHANNEL_LABEL: &str = "chat";

/// How long [`Peer::send_text`] waits for a data channel to open.
const CHANNEL_OPEN_TIMEOUT: Duration = Duration::from_secs(10);

/// One side of a consultation's peer connection. See the module documentation.
pub struct Peer {
    polite: bool,
    pc: Arc<dyn PeerConnection>,
    shared: Arc<Shared>,
    /// What this peer wants delivered to the other seat, in order.
    outgoing: Mutex<mpsc::UnboundedReceiver<Value>>,
    /// Text received on any data channel, in arrival order.
    incoming: Mutex<mpsc::UnboundedReceiver<String>>,
    state: watch::Receiver<RTCPeerConnectionState>,
    negotiator: JoinHandle<()>,
}

impl fmt::Debug for Peer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Peer")
            .field("polite", &self.polite)
            .field("state", &*self.state.borrow())
            .finish_non_exhaustive()
    }
}

impl Peer {
    /// A peer with no ICE servers: loopback host candidates only. `polite` is the flag
    /// the server handed out for this pair (`joined.polite` / `peer_joined.polite`).
    pub async fn new(polite: bool) -> anyhow::Result<Peer> {
        Peer::with_ice_servers(polite, &Value::Array(Vec::new())).await
    }

    /// A peer using `ice_servers` in the shape of `joined.ice_servers`
    /// (`[{"urls": [..], "username": .., "credential": ..}]`; an empty array is fine).
    pub async fn with_ice_servers(polite: bool, ice_servers: &Value) -> anyhow::Result<Peer> {
        let (commands_tx, commands_rx) = mpsc::unbounded_channel();
        let (outgoing_tx, outgoing_rx) = mpsc::unbounded_channel();
        let (incoming_tx, incoming_rx) = mpsc::unbounded_channel();
        let (state_tx, state_rx) = watch::channel(RTCPeerConnectionState::New);
        let shared = Arc::new(Shared {
            commands: commands_tx,
            state: state_tx,
            open_channels: watch::channel(Vec::new()).0,
            incoming: incoming_tx,
            errors: StdMutex::new(Vec::new()),
        });

        let configuration = RTCConfigurationBuilder::new()
            .with_ice_servers(parse_ice_servers(ice_servers)?)
            .build();
        let pc: Arc<dyn PeerConnection> = Arc::new(
            PeerConnectionBuilder::new()
                .with_configuration(configuration)
                .with_handler(Arc::new(Handler(Arc::clone(&shared))))
                // Loopback only: the tests need no network and no STUN.
                .with_udp_addrs(vec!["127.0.0.1:0"])
                .build()
                .await
                .context("building the peer connection")?,
        );

        let negotiator = Negotiator {
            pc: Arc::clone(&pc),
            polite,
            ignore_offer: false,
            outgoing: outgoing_tx,
            early_candidates: Vec::new(),
            remote_ufrags: HashSet::new(),
            ended_ufrag: None,
        };
        let negotiator = tokio::spawn(negotiator.run(commands_rx, Arc::clone(&shared)));

        Ok(Peer {
            polite,
            pc,
            shared,
            outgoing: Mutex::new(outgoing_rx),
            incoming: Mutex::new(incoming_rx),
            state: state_rx,
            negotiator,
        })
    }

    /// The next message for the other seat: `offer`/`answer` (`sdp`), `candidate`
    /// (`candidate`, `sdp_mid`, `sdp_mline_index`, `username_fragment`) or
    /// `end_of_candidates` (`username_fragment`), without `id` and `to`. `None` once the
    /// peer is closed. Messages must reach the other side in this order.
    pub async fn next_outgoing(&self) -> Option<Value> {
        self.outgoing.lock().await.recv().await
    }

    /// Creates a `chat` data channel. The first one on a connection makes the connection
    /// need negotiation, so an offer follows on [`next_outgoing`](Self::next_outgoing).
    /// Both sides may call it at once: that is glare, settled by perfect negotiation.
    pub async fn open_channel(&self) -> anyhow::Result<()> {
        let channel = self
            .pc
            .create_data_channel(CHANNEL_LABEL, None)
            .await
            .context("creating the data channel")?;
        spawn_channel_reader(Arc::clone(&self.shared), channel);
        Ok(())
    }

    /// Applies a message the server relayed from the other seat: `offer`, `answer`,
    /// `candidate`, `end_of_candidates` or `ice_restart`. Anything else is an error.
    pub async fn handle_relayed(&self, message: &Value) -> anyhow::Result<()> {
        self.ask(|reply| Command::Relayed(message.clone(), reply)).await
    }

    /// Restarts ICE (`restartIce()`): a new offer with a new `a=ice-ufrag` and
    /// `a=ice-pwd` follows on [`next_outgoing`](Self::next_outgoing). Only from a stable
    /// signaling state, which is when the protocol's policy calls for it.
    pub async fn restart_ice(&self) -> anyhow::Result<()> {
        self.ask(Command::RestartIce).await
    }

    /// Waits until the peer connection (ICE and DTLS) is `connected`. Fails early if it
    /// becomes `failed` or `closed`.
    pub async fn wait_connected(&self, timeout: Duration) -> anyhow::Result<()> {
        let mut state = self.state.clone();
        let waited = tokio::time::timeout(
            timeout,
            state.wait_for(|state| {
                matches!(
                    state,
                    RTCPeerConnectionState::Connected
                        | RTCPeerConnectionState::Failed
                        | RTCPeerConnectionState::Closed
                )
            }),
        )
        .await;
        let reached = match waited {
            Ok(Ok(state)) => *state,
            Ok(Err(_)) => bail!("the peer is gone{}", self.shared.errors_suffix()),
            Err(_) => bail!(
                "not connected within {timeout:?} (state {}){}",
                *self.state.borrow(),
                self.shared.errors_suffix()
            ),
        };
        if reached != RTCPeerConnectionState::Connected {
            bail!("the connection became {reached}{}", self.shared.errors_suffix());
        }
        Ok(())
    }

    /// Sends `text` on an open data channel (the first that opened, whichever side
    /// created it), waiting up to 10 s for one to open.
    pub async fn send_text(&self, text: &str) -> anyhow::Result<()> {
        let mut open = self.shared.open_channels.subscribe();
        let channel = tokio::time::timeout(CHANNEL_OPEN_TIMEOUT, open.wait_for(|open| !open.is_empty()))
            .await
            .map_err(|_| {
                anyhow!(
                    "no data channel opened within {CHANNEL_OPEN_TIMEOUT:?}{}",
                    self.shared.errors_suffix()
                )
            })?
            .context("the peer is gone")?
            .first()
            .cloned()
            .context("no open data channel")?;
        channel
            .send_text(text)
            .await
            .context("sending on the data channel")
    }

    /// The next text message received on any data channel.
    pub async fn recv_text(&self, timeout: Duration) -> anyhow::Result<String> {
        let mut incoming = self.incoming.lock().await;
        tokio::time::timeout(timeout, incoming.recv())
            .await
            .map_err(|_| anyhow!("no text within {timeout:?}{}", self.shared.errors_suffix()))?
            .context("the peer is closed")
    }

    /// The ICE username fragment of the local description, once there is one.
    pub async fn local_ufrag(&self) -> Option<String> {
        let local = self.pc.local_description().await?;
        ice_ufrag(&local.sdp).map(str::to_owned)
    }

    /// Failures in the background that no call reported: a failed offer after
    /// `negotiationneeded`, a local candidate that would not serialize, a data channel
    /// message that was not text. A test can assert this is empty at the end.
    pub fn background_errors(&self) -> Vec<String> {
        self.shared
            .errors
            .lock()
            .map(|errors| errors.clone())
            .unwrap_or_default()
    }

    /// Stops negotiating and closes the connection (idempotent).
    pub async fn close(&self) {
        self.negotiator.abort();
        // Closing twice, or after the driver stopped, is not worth failing a test over.
        let _ = self.pc.close().await;
    }

    async fn ask(
        &self,
        command: impl FnOnce(oneshot::Sender<anyhow::Result<()>>) -> Command,
    ) -> anyhow::Result<()> {
        let (reply, replied) = oneshot::channel();
        self.shared
            .commands
            .send(command(reply))
            .map_err(|_| anyhow!("the peer is closed"))?;
        replied.await.map_err(|_| anyhow!("the peer is closed"))?
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        // The connection's driver stops with the test's runtime; the negotiator would
        // otherwise wait on its queue forever, since the handler holds a sender.
        self.negotiator.abort();
    }
}

/// The `a=ice-ufrag` of a description (the first one: with BUNDLE every section has
/// the same credentials).
pub fn ice_ufrag(sdp: &str) -> Option<&str> {
    sdp.lines().find_map(|line| line.strip_prefix("a=ice-ufrag:"))
}

/// The mid of a description's first media section: where BUNDLE puts every candidate.
fn first_mid(sdp: &str) -> Option<&str> {
    sdp.lines().find_map(|line| line.strip_prefix("a=mid:"))
}

fn parse_ice_servers(ice_servers: &Value) -> anyhow::Result<Vec<RTCIceServer>> {
    let servers = ice_servers.as_array().context("ice_servers is not an array")?;
    servers
        .iter()
        .map(|server| {
            let urls = server["urls"]
                .as_array()
                .context("an ICE server without urls")?
                .iter()
                .map(|url| {
                    url.as_str()
                        .map(str::to_owned)
                        .context("a url that is not a string")
                })
                .collect::<anyhow::Result<_>>()?;
            let text = |field: &str| server[field].as_str().unwrap_or_default().to_owned();
            Ok(RTCIceServer {
                urls,
                username: text("username"),
                credential: text("credential"),
            })
        })
        .collect()
}

/// What the handler, the reader tasks and the [`Peer`] share.
struct Shared {
    commands: mpsc::UnboundedSender<Command>,
    state: watch::Sender<RTCPeerConnectionState>,
    /// Data channels that are open, in the order they opened.
    open_channels: watch::Sender<Vec<Arc<dyn DataChannel>>>,
    incoming: mpsc::UnboundedSender<String>,
    /// Failures nobody was waiting for (a failed offer after `negotiationneeded`, say),
    /// kept so that a timeout can say what went wrong.
    errors: StdMutex<Vec<String>>,
}

impl Shared {
    fn record_error(&self, error: String) {
        if let Ok(mut errors) = self.errors.lock() {
            errors.push(error);
        }
    }

    fn errors_suffix(&self) -> String {
        match self.errors.lock() {
            Ok(errors) if !errors.is_empty() => format!("; background errors: {}", errors.join("; ")),
            _ => String::new(),
        }
    }
}

/// Work for the negotiator, in the order it must happen.
enum Command {
    NegotiationNeeded,
    /// A gathered local candidate's `candidate:` line.
    LocalCandidate(String),
    GatheringComplete,
    Relayed(Value, oneshot::Sender<anyhow::Result<()>>),
    RestartIce(oneshot::Sender<anyhow::Result<()>>),
}

/// Forwards the connection's events. Runs on the connection's driver task, so it must
/// not await the connection: it only queues work and updates watches.
struct Handler(Arc<Shared>);

#[async_trait::async_trait]
impl PeerConnectionEventHandler for Handler {
    async fn on_negotiation_needed(&self) {
        let _ = self.0.commands.send(Command::NegotiationNeeded);
    }

    async fn on_ice_candidate(&self, event: RTCPeerConnectionIceEvent) {
        match event.candidate.to_json() {
            Ok(init) => {
                let _ = self.0.commands.send(Command::LocalCandidate(init.candidate));
            }
            Err(error) => self
                .0
                .record_error(format!("unserializable local candidate: {error}")),
        }
    }

    async fn on_ice_gathering_state_change(&self, state: RTCIceGatheringState) {
        if state == RTCIceGatheringState::Complete {
            let _ = self.0.commands.send(Command::GatheringComplete);
        }
    }

    async fn on_connection_state_change(&self, state: RTCPeerConnectionState) {
        self.0.state.send_replace(state);
    }

    async fn on_data_channel(&self, channel: Arc<dyn DataChannel>) {
        spawn_channel_reader(Arc::clone(&self.0), channel);
    }
}

/// Reads one data channel until it closes: records it as open, and queues its text.
fn spawn_channel_reader(shared: Arc<Shared>, channel: Arc<dyn DataChannel>) {
    tokio::spawn(async move {
        while let Some(event) = channel.poll().await {
            match event {
                DataChannelEvent::OnOpen => {
                    shared
                        .open_channels
                        .send_modify(|open| open.push(Arc::clone(&channel)));
                }
                DataChannelEvent::OnMessage(message) => match String::from_utf8(message.data.to_vec()) {
                    Ok(text) => {
                        let _ = shared.incoming.send(text);
                    }
                    Err(_) => shared.record_error("a data channel message that is not UTF-8".to_owned()),
                },
                DataChannelEvent::OnClose => break,
                _ => {}
            }
        }
        shared
            .open_channels
            .send_modify(|open| open.retain(|open| !Arc::ptr_eq(open, &channel)));
    });
}

/// The single task that negotiates; see the module documentation for why it is one.
struct Negotiator {
    pc: Arc<dyn PeerConnection>,
    polite: bool,
    /// W3C's `ignoreOffer`: we are impolite and dropped the last offer, so failures to add
    /// the candidates that belong to it are expected.
    ignore_offer: bool,
    outgoing: mpsc::UnboundedSender<Value>,
    /// Remote candidates that cannot be applied yet: no remote description, or one from
    /// an ICE generation whose description has not arrived.
    early_candidates: Vec<RTCIceCandidateInit>,
    /// The ufrag of every remote description applied so far, to tell a candidate of a
    /// past generation (dropped, as browsers do) from one of a future one (held).
    remote_ufrags: HashSet<String>,
    /// The local ufrag whose `end_of_candidates` went out last.
    ended_ufrag: Option<String>,
}

/// What to do with a remote candidate now.
enum Fate {
    Apply,
    Hold,
    Drop,
}

impl Negotiator {
    async fn run(mut self, mut commands: mpsc::UnboundedReceiver<Command>, shared: Arc<Shared>) {
        while let Some(command) = commands.recv().await {
            match command {
                Command::NegotiationNeeded => {
                    if let Err(error) = self.on_negotiation_needed().await {
                        shared.record_error(format!("offering after negotiationneeded: {error:#}"));
                    }
                }
                Command::LocalCandidate(candidate) => self.send_local_candidate(candidate).await,
                Command::GatheringComplete => self.send_end_of_candidates().await,
                Command::Relayed(relayed, reply) => {
                    let _ = reply.send(self.on_relayed(&relayed).await);
                }
                Command::RestartIce(reply) => {
                    let _ = reply.send(self.restart_ice().await);
                }
            }
        }
    }

    fn send(&self, message: Value) {
        // Nobody reading any more means the peer is being dropped.
        let _ = self.outgoing.send(message);
    }

    /// `stable`, worked out from the descriptions (the trait has no signaling-state getter;
    /// `on_signaling_state_change` would tell us, but later than we need to know).
    async fn is_stable(&self) -> bool {
        self.pc.pending_local_description().await.is_none()
            && self.pc.pending_remote_description().await.is_none()
    }

    async fn local_ufrag(&self) -> Option<String> {
        let local = self.pc.local_description().await?;
        ice_ufrag(&local.sdp).map(str::to_owned)
    }

    async fn on_negotiation_needed(&mut self) -> anyhow::Result<()> {
        // The event is queued, so it may be stale by now. The core fires it again on every
        // return to `stable` while something is still unnegotiated (in particular after a
        // polite rollback, when it has never had a local description), so offering only
        // when stable and the data section is not negotiated yet loses nothing and avoids
        // a needless second round.
        if !self.is_stable().await {
            return Ok(());
        }
        let negotiated = self
            .pc
            .current_local_description()
            .await
            .is_some_and(|local| local.sdp.contains("m=application"));
        if negotiated {
            return Ok(());
        }
        self.send_offer().await
    }

    async fn send_offer(&mut self) -> anyhow::Result<()> {
        let offer = self.pc.create_offer(None).await.context("create_offer")?;
        self.pc
            .set_local_description(offer.clone())
            .await
            .context("set_local_description(offer)")?;
        self.send(json!({"type": "offer", "sdp": offer.sdp}));
        Ok(())
    }

    async fn restart_ice(&mut self) -> anyhow::Result<()> {
        if !self.is_stable().await {
            bail!("ICE restart requested in the middle of a negotiation");
        }
        // `restart_ice` only arms the next `create_offer` (it fires no negotiationneeded),
        // so the offer is made here. `create_offer(Some(RTCOfferOptions { ice_restart }))`
        // would do the same, but `webrtc` does not re-export `RTCOfferOptions`.
        self.pc.restart_ice().await.context("restart_ice")?;
        self.send_offer().await
    }

    async fn send_local_candidate(&self, candidate: String) {
        let local = self.pc.local_description().await;
        let sdp = local.as_ref().map(|local| local.sdp.as_str()).unwrap_or_default();
        // `RTCIceCandidate::to_json` says `sdp_mid: ""`, which the server refuses (a mid is
        // an SDP token), and no ufrag; a browser says which section and generation.
        let mid = first_mid(sdp).unwrap_or("0");
        let ufrag = ice_ufrag(sdp).map(Value::from);
        self.send(message(
            "candidate",
            [
                ("candidate", Some(Value::from(candidate))),
                ("sdp_mid", Some(Value::from(mid))),
                ("sdp_mline_index", Some(Value::from(0))),
                ("username_fragment", ufrag),
            ],
        ));
    }

    async fn send_end_of_candidates(&mut self) {
        // The driver gathers again at every `set_local_description` (and at `restart_ice`),
        // each time ending with "complete", though no new candidate turns up: a browser
        // ends each generation once, so only the first end per ufrag is sent.
        let ufrag = self.local_ufrag().await;
        if ufrag.is_some() && ufrag == self.ended_ufrag {
            return;
        }
        self.ended_ufrag.clone_from(&ufrag);
        self.send(message(
            "end_of_candidates",
            [("username_fragment", ufrag.map(Value::from))],
        ));
    }

    async fn on_relayed(&mut self, relayed: &Value) -> anyhow::Result<()> {
        let kind = relayed["type"]
            .as_str()
            .context("a relayed message without a type")?;
        match kind {
            "offer" | "answer" => {
                let sdp = relayed["sdp"]
                    .as_str()
                    .context("a description without sdp")?
                    .to_owned();
                self.on_description(kind == "offer", sdp).await
            }
            "candidate" | "end_of_candidates" => {
                let text = |field: &str| relayed[field].as_str().map(str::to_owned);
                let candidate = RTCIceCandidateInit {
                    // End of candidates is the empty candidate, as in the browser.
                    candidate: text("candidate").unwrap_or_default(),
                    sdp_mid: text("sdp_mid"),
                    sdp_mline_index: relayed["sdp_mline_index"]
                        .as_u64()
                        .and_then(|i| u16::try_from(i).ok()),
                    username_fragment: text("username_fragment"),
                    url: None,
                };
                self.add_remote_candidate(candidate).await
            }
            // The polite side asks; we restart (PROTOCOL.md, "ICE restart").
            "ice_restart" => self.restart_ice().await,
            other => bail!("not a relayed negotiation message: {other:?}"),
        }
    }

    async fn on_description(&mut self, is_offer: bool, sdp: String) -> anyhow::Result<()> {
        // No `making_offer` term: offers are made in one step on this task, never
        // half-way when a relayed message is handled.
        let collision = is_offer && !self.is_stable().await;
        self.ignore_offer = !self.polite && collision;
        if self.ignore_offer {
            return Ok(());
        }
        if collision {
            // `rtc` 0.21 has no implicit rollback: `set_remote_description(offer)` in
            // `have-local-offer` is an error, so roll our offer back first.
            self.pc
                .set_local_description(RTCSessionDescription::rollback(None)?)
                .await
                .context("rolling back our offer")?;
        }
        let ufrag = ice_ufrag(&sdp).map(str::to_owned);
        let description = if is_offer {
            RTCSessionDescription::offer(sdp)?
        } else {
            RTCSessionDescription::answer(sdp)?
        };
        let which = if is_offer { "offer" } else { "answer" };
        self.pc
            .set_remote_description(description)
            .await
            .with_context(|| format!("set_remote_description({which})"))?;
        self.remote_ufrags.extend(ufrag);
        if is_offer {
            let answer = self.pc.create_answer(None).await.context("create_answer")?;
            self.pc
                .set_local_description(answer.clone())
                .await
                .context("set_local_description(answer)")?;
            self.send(json!({"type": "answer", "sdp": answer.sdp}));
        }
        for candidate in std::mem::take(&mut self.early_candidates) {
            self.add_remote_candidate(candidate).await?;
        }
        Ok(())
    }

    async fn candidate_fate(&self, candidate: &RTCIceCandidateInit) -> Fate {
        let Some(remote) = self.pc.remote_description().await else {
            // `add_ice_candidate` would fail with "no remote description". The server
            // holds candidates until their description is out, but not those of an offer
            // we ignored, and a test relay may not hold anything.
            return Fate::Hold;
        };
        match &candidate.username_fragment {
            Some(ufrag) if Some(ufrag.as_str()) != ice_ufrag(&remote.sdp) => {
                if self.remote_ufrags.contains(ufrag) {
                    Fate::Drop
                } else {
                    Fate::Hold
                }
            }
            _ => Fate::Apply,
        }
    }

    async fn add_remote_candidate(&mut self, candidate: RTCIceCandidateInit) -> anyhow::Result<()> {
        match self.candidate_fate(&candidate).await {
            Fate::Hold => self.early_candidates.push(candidate),
            Fate::Drop => {}
            Fate::Apply => match self.pc.add_ice_candidate(candidate).await {
                Ok(()) => {}
                // A candidate of the offer we ignored (W3C's pattern swallows these).
                Err(_) if self.ignore_offer => {}
                Err(error) => return Err(error).context("add_ice_candidate"),
            },
        }
        Ok(())
    }
}

/// `{"type": kind, ..fields}`, leaving out the fields that are `None`.
fn message<const N: usize>(kind: &str, fields: [(&str, Option<Value>); N]) -> Value {
    let mut object = Map::new();
    object.insert("type".to_owned(), Value::from(kind));
    for (name, value) in fields {
        if let Some(value) = value {
            object.insert(name.to_owned(), value);
        }
    }
    Value::Object(object)
}
