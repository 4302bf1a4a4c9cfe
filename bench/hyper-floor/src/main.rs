//! The smallest reverse proxy built the way relay's two ends are: a hyper
//! HTTP/1 server for visitors and a hyper HTTP/1 client to the origin, in
//! one process, with no tunnel in between.
//!
//! Relay does at least this much work per request (its server parses and
//! writes the visitor's HTTP with hyper, its client does the same towards
//! the local app) and then also carries the exchange over a WebSocket
//! between two processes. So this proxy's throughput bounds relay's from
//! above on the same host, and comparing it with rathole tells whether
//! "at least rathole's ratio" is reachable by any design that keeps hyper
//! on both ends. `compare.sh` runs that comparison.
//!
//! Usage: `hyper-floor LISTEN_ADDR ORIGIN_ADDR`

use std::error::Error;
use std::sync::Arc;

use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::Request;
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Mutex;

/// Same allocator as relay's binaries, so the comparison is not about malloc.
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

type BoxError = Box<dyn Error + Send + Sync>;

/// Single-threaded like relay under the benchmark's one-CPU pinning.
#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), BoxError> {
    let mut args = std::env::args().skip(1);
    let (Some(listen), Some(origin)) = (args.next(), args.next()) else {
        return Err("usage: hyper-floor LISTEN_ADDR ORIGIN_ADDR".into());
    };
    let listener = TcpListener::bind(&listen).await?;
    println!("listening on {}", listener.local_addr()?);
    let origin: Arc<str> = origin.into();
    loop {
        let (visitor, _) = listener.accept().await?;
        let origin = origin.clone();
        tokio::spawn(async move {
            if let Err(e) = proxy(visitor, &origin).await {
                eprintln!("connection: {e}");
            }
        });
    }
}

/// One origin connection per visitor connection, polled in the visitor's
/// own task, so a request or body crosses no task boundary: the cheapest
/// arrangement hyper allows, which is the point of a floor.
async fn proxy(visitor: TcpStream, origin: &str) -> Result<(), BoxError> {
    visitor.set_nodelay(true)?;
    let upstream = TcpStream::connect(origin).await?;
    upstream.set_nodelay(true)?;
    let (sender, origin_conn) =
        hyper::client::conn::http1::handshake(TokioIo::new(upstream)).await?;
    // HTTP/1 handles one request at a time per connection; the lock only
    // satisfies the service's `Fn` bound and is never contended.
    let sender = Arc::new(Mutex::new(sender));
    let service = service_fn(move |req: Request<Incoming>| {
        let sender = sender.clone();
        async move {
            let mut sender = sender.lock().await;
            sender.ready().await?;
            sender.send_request(req).await
        }
    });
    let serve =
        hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(visitor), service);
    tokio::select! {
        r = serve => r?,
        r = origin_conn => r?,
    }
    Ok(())
}
