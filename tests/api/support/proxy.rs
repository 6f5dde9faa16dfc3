//! A TCP proxy in front of PostgreSQL that a test can cut and restore, to see the
//! server lose its database and recover without a restart.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream, UnixStream};
use tokio::sync::watch;

use super::database::Target;

pub struct DbProxy {
    pub port: u16,
    up: Arc<AtomicBool>,
    cut: watch::Sender<u64>,
    task: tokio::task::JoinHandle<()>,
}

impl DbProxy {
    pub async fn start(target: Target) -> DbProxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind the proxy");
        let port = listener.local_addr().expect("proxy address").port();
        let up = Arc::new(AtomicBool::new(true));
        let (cut, cuts) = watch::channel(0u64);
        let accept_up = up.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((client, _)) = listener.accept().await else {
                    continue;
                };
                if !accept_up.load(Ordering::SeqCst) {
                    drop(client); // the database is "down": refuse
                    continue;
                }
                let target = target.clone();
                let mut cuts = cuts.clone();
                cuts.borrow_and_update();
                tokio::spawn(async move {
                    let relay = async {
                        match target {
                            Target::Tcp(addr) => {
                                let server = TcpStream::connect(addr).await?;
                                pipe(client, server).await
                            }
                            Target::Unix(dir) => {
                                let server = UnixStream::connect(dir.join(".s.PGSQL.5432")).await?;
                                pipe(client, server).await
                            }
                        }
                    };
                    tokio::select! {
                        _ = relay => {}
                        _ = cuts.changed() => {} // drop both ends
                    }
                });
            }
        });
        DbProxy { port, up, cut, task }
    }

    /// The database becomes unreachable: open connections die, new ones are refused.
    pub fn cut(&self) {
        self.up.store(false, Ordering::SeqCst);
        self.cut.send_modify(|n| *n += 1);
    }

    /// The database is reachable again.
    pub fn restore(&self) {
        self.up.store(true, Ordering::SeqCst);
    }
}

impl Drop for DbProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn pipe<A, B>(mut a: A, mut b: B) -> std::io::Result<()>
where
    A: AsyncRead + AsyncWrite + Unpin,
    B: AsyncRead + AsyncWrite + Unpin,
{
    tokio::io::copy_bidirectional(&mut a, &mut b).await.map(|_| ())
}
