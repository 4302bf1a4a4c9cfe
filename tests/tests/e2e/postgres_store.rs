//! `relay-server --store postgres://...` (issue 17 part 1): the same server
//! with its tokens, names and captures in PostgreSQL. A tunnel's exchange is
//! captured, a request made while the client is away is committed before
//! its 202 and delivered once by `--deliver-missed`, and all of it is read
//! back through the API, from the database the test made for itself.

use relay_tests::capture_api::TunnelApi;
use relay_tests::delivery::{self, check_inbox, post, send_missed, wait_inbox, Answer};
use relay_tests::postgres::TestDatabase;

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_on_postgres_captures_and_delivers_missed_requests() -> Result<()> {
    run_test(secs(90), async {
        let db = TestDatabase::create().await?;
        let url = db.url.clone();
        let mut s = Stack::builder()
            .name("on-postgres")
            .when_offline("accept")
            .server(move |c| c.extra_args.extend(["--store".to_owned(), url]))
            .start()
            .await?;
        let api = TunnelApi::new(&s.server, &s.client.cfg, "on-postgres")?;

        let live = post(&s.client, "/echo?live=1", b"hello".to_vec()).await?;
        ensure!(
            live.status == StatusCode::OK,
            "through the tunnel: {live:?}"
        );
        let live_id = live.request_id().context("the exchange's request id")?;
        let sum = api.summary(&live_id).await?;
        ensure!(
            sum["outcome"] == "delivered" && sum["status"] == 200 && sum["path"] == "/echo?live=1",
            "the exchange is captured in PostgreSQL: {sum}"
        );

        s.go_offline_quietly().await?;
        let sent = send_missed(&s.client, "pg", 2, Answer::Accept).await?;
        let m = api.missed().await?;
        ensure!(m["count"] == 2, "both wait: {m}");
        s.client = RelayClient::connect(s.client.cfg.clone().deliver_missed()).await?;
        wait_inbox(&s.origin, 2, secs(30)).await?;
        check_inbox(&s.origin, &sent)?;
        let delivered = api.wait_delivered(&delivery::ids(&sent)).await?;
        ensure!(
            delivered.iter().all(|d| d["delivered_by"].is_string()),
            "each names its replay: {delivered:?}"
        );
        ensure!(api.missed().await?["count"] == 0, "nothing waits");
        drop(s);
        drop(db);
        Ok(())
    })
    .await
}
