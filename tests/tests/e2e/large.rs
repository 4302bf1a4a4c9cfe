//! 256 MiB each way through one tunnel with bounded memory in both binaries.

use super::*;

const BIG: u64 = 256 << 20;
const HWM_LIMIT_KIB: u64 = 64 * 1024;

fn check_memory(s: &mut Stack) -> Result<()> {
    let server = s.server.proc.vm_hwm_kib()?;
    let client = s.client.proc.vm_hwm_kib()?;
    eprintln!("VmHWM: relay-server {server} KiB, relay {client} KiB");
    ensure!(
        server < HWM_LIMIT_KIB,
        "relay-server peak RSS {server} KiB >= {HWM_LIMIT_KIB} KiB after moving 256 MiB"
    );
    ensure!(
        client < HWM_LIMIT_KIB,
        "relay client peak RSS {client} KiB >= {HWM_LIMIT_KIB} KiB after moving 256 MiB"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upload_256_mib_with_bounded_memory() -> Result<()> {
    run_test(secs(170), async {
        let mut s = Stack::builder()
            .name("upload")
            .server(|c| c.max_body = Some("1GiB".into()))
            .start()
            .await?;
        let req = s
            .client
            .request(Routing::Host, "POST", "/upload")
            .header(CONTENT_TYPE, "application/octet-stream")
            .body(PatternBody::new(1, BIG).boxed())?;
        let started = Instant::now();
        let f = fetch(s.client.public_addr(), req, secs(150)).await?;
        eprintln!("256 MiB upload took {:?}", started.elapsed());
        ensure!(
            f.status == StatusCode::OK,
            "upload answered {} {:?}",
            f.status,
            String::from_utf8_lossy(&f.body)
        );
        let j = f.json()?;
        assert_eq!(j["len"], BIG, "bytes received by the local app");
        assert_eq!(j["sha256"], SHA256_SEED1_256MIB, "sha256 at the local app");
        check_memory(&mut s)
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn download_256_mib_with_bounded_memory() -> Result<()> {
    run_test(secs(170), async {
        let mut s = Stack::builder()
            .name("download")
            .server(|c| c.max_body = Some("1GiB".into()))
            .start()
            .await?;
        let req = s
            .client
            .request(Routing::Host, "GET", &format!("/download?bytes={BIG}"))
            .body(empty())?;
        let started = Instant::now();
        let (len, sha) = within("the 256 MiB download", secs(150), async {
            let resp = send(s.client.public_addr(), req).await?;
            ensure!(
                resp.status() == StatusCode::OK,
                "download answered {}",
                resp.status()
            );
            let mut body = resp.into_body();
            let mut h = Sha256::new();
            let mut len = 0u64;
            while let Some(frame) = body.frame().await {
                if let Ok(d) = frame.context("download body")?.into_data() {
                    len += d.len() as u64;
                    h.update(&d);
                }
            }
            Ok((len, hex(&h.finalize())))
        })
        .await??;
        eprintln!("256 MiB download took {:?}", started.elapsed());
        assert_eq!(len, BIG, "bytes received by the visitor");
        assert_eq!(sha, SHA256_SEED1_256MIB, "sha256 at the visitor");
        check_memory(&mut s)
    })
    .await
}
