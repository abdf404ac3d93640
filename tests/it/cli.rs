//! The admin commands as the real binary, on an SQLite store in a temporary directory:
//! output, exit codes (0 ok, 2 usage), and what they leave in the store.

use std::process::{Command, Output, Stdio};

struct Cli {
    dir: tempfile::TempDir,
}

impl Cli {
    fn new() -> Cli {
        Cli {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    fn run(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_herald"))
            .args(args)
            .env(
                "HERALD_DATABASE_URL",
                format!(
                    "sqlite://{}?mode=rwc",
                    self.dir.path().join("herald.db").display()
                ),
            )
            .env_remove("HERALD_RATE_CARD")
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .output()
            .expect("run herald")
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn usage_error(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {out:?}");
        String::from_utf8_lossy(&out.stderr).into_owned()
    }
}

#[test]
fn a_campaign_budget_is_set_shown_and_cleared() {
    let cli = Cli::new();
    let out = cli.ok(&["campaign", "budget", "bf-2026", "--amount", "250.50"]);
    assert!(out.contains("budget 250.5000 USD"), "{out}");
    assert!(out.contains("left 250.5000 USD"), "{out}");
    let status = cli.ok(&["campaign", "status", "bf-2026"]);
    assert!(status.contains("campaign bf-2026: active"), "{status}");
    assert!(
        status.contains("budget 250.5000 USD · committed 0.0000 USD"),
        "{status}"
    );
    let out = cli.ok(&["campaign", "budget", "bf-2026", "--clear"]);
    assert!(out.contains("no budget"), "{out}");
}

#[test]
fn a_bad_budget_is_a_usage_error() {
    let cli = Cli::new();
    let err = cli.usage_error(&["campaign", "budget", "bf", "--amount", "12,50"]);
    assert!(err.contains("not an amount"), "{err}");
    let err = cli.usage_error(&["campaign", "budget", "bf", "--amount=-3"]);
    assert!(err.contains("not an amount"), "{err}");
    let err = cli.usage_error(&[
        "campaign",
        "budget",
        "bf",
        "--amount",
        "10",
        "--currency",
        "EUR",
    ]);
    assert!(err.contains("prices in USD"), "{err}");
    // Neither an amount nor --clear.
    cli.usage_error(&["campaign", "budget", "bf"]);
    // Nothing was stored by the refused commands.
    let err = cli.usage_error(&["campaign", "status", "bf"]);
    assert!(err.contains("no campaign"), "{err}");
}

/// What `herald contacts export` shows for `phone`.
fn exported(cli: &Cli, phone: &str) -> serde_json::Value {
    serde_json::from_str(&cli.ok(&["contacts", "export", phone])).unwrap()
}

/// The (category, channel) of each consent or revocation in an export (`None` = every one).
fn pairs(list: &serde_json::Value) -> Vec<(Option<String>, Option<String>)> {
    list.as_array()
        .unwrap()
        .iter()
        .map(|v| {
            (
                v["category"].as_str().map(str::to_owned),
                v["channel"].as_str().map(str::to_owned),
            )
        })
        .collect()
}

fn some(category: &str, channel: &str) -> (Option<String>, Option<String>) {
    (Some(category.to_owned()), Some(channel.to_owned()))
}

#[test]
fn consent_is_imported_granted_and_revoked_per_channel() {
    let cli = Cli::new();
    let csv = cli.dir.path().join("consents.csv");
    std::fs::write(
        &csv,
        "phone,category,granted_at,source,proof,channel\n\
         +4915112345678,marketing,2026-01-02T10:00:00Z,checkout,box v3,WhatsApp\n\
         +4915112345678,marketing,2026-01-02T10:00:00Z,sms-form,keyword JA,sms\n\
         +4917698765432,marketing,2026-01-02T10:00:00Z,checkout,box v3,whatsapp\n",
    )
    .unwrap();
    let out = cli.ok(&["consent", "import", csv.to_str().unwrap()]);
    assert!(out.contains("3 consent(s) imported"), "{out}");
    let anna = exported(&cli, "+4915112345678");
    assert_eq!(
        pairs(&anna["consents"]),
        [some("marketing", "sms"), some("marketing", "whatsapp")]
    );

    let out = cli.ok(&[
        "consent",
        "grant",
        "+4917698765432",
        "--category",
        "utility",
        "--channel",
        "SMS",
        "--source",
        "shop",
        "--proof",
        "form 7",
    ]);
    assert!(out.contains("(utility on sms)"), "{out}");
    let out = cli.ok(&[
        "consent",
        "revoke",
        "+4915112345678",
        "--category",
        "marketing",
        "--channel",
        "sms",
    ]);
    assert!(out.contains("(marketing on sms)"), "{out}");
    // Without --channel an opt-out is for every channel.
    let out = cli.ok(&["consent", "revoke", "+4917698765432"]);
    assert!(out.contains("(all categories on all channels)"), "{out}");

    let anna = exported(&cli, "+4915112345678");
    assert_eq!(pairs(&anna["revocations"]), [some("marketing", "sms")]);
    let jonas = exported(&cli, "+4917698765432");
    assert_eq!(
        pairs(&jonas["consents"]),
        [some("marketing", "whatsapp"), some("utility", "sms")]
    );
    assert_eq!(pairs(&jonas["revocations"]), [(None, None)]);
}

#[test]
fn a_bad_channel_is_a_usage_error_naming_the_line_and_column_not_the_number() {
    let cli = Cli::new();
    let csv = cli.dir.path().join("consents.csv");
    // The third row's columns slipped: a number where the channel belongs.
    std::fs::write(
        &csv,
        "phone,category,channel,granted_at,source,proof\n\
         +4915112345678,marketing,sms,2026-01-02T10:00:00Z,checkout,box v3\n\
         +4917698765432,marketing,+4917698765432,2026-01-02T10:00:00Z,checkout,box v3\n",
    )
    .unwrap();
    let err = cli.usage_error(&["consent", "import", csv.to_str().unwrap()]);
    assert!(err.contains("line 3: column 'channel'"), "{err}");
    assert!(err.contains("nothing imported"), "{err}");
    assert!(!err.contains("7698765432"), "{err}");
    let anna = exported(&cli, "+4915112345678");
    assert!(anna["consents"].as_array().unwrap().is_empty());

    let err = cli.usage_error(&[
        "consent",
        "grant",
        "+4915112345678",
        "--category",
        "marketing",
        "--channel",
        "fax",
        "--source",
        "x",
        "--proof",
        "y",
    ]);
    assert!(err.contains("--channel"), "{err}");
}

#[test]
fn the_estimate_counts_consent_on_each_recipients_channel() {
    let cli = Cli::new();
    let job = cli.dir.path().join("job.json");
    std::fs::write(
        &job,
        r#"{"version": 1, "job_id": "j1", "campaign_id": "c1", "sender": "106540352242922",
            "template": {"name": "flash_sale", "language": "de", "category": "marketing"},
            "recipients": [
                {"to": "+4915112345678"},
                {"to": "+4917698765432", "channel": "sms"},
                {"to": "+4916012345670", "channel": "sms"}
            ],
            "sms": {"from": "ACME", "text": "ACME: -30 % today. STOP: reply STOP"}}"#,
    )
    .unwrap();
    // The third prefers SMS but consented to WhatsApp only.
    for (to, channel) in [
        ("+4915112345678", "whatsapp"),
        ("+4917698765432", "sms"),
        ("+4916012345670", "whatsapp"),
    ] {
        cli.ok(&[
            "consent",
            "grant",
            to,
            "--category",
            "marketing",
            "--channel",
            channel,
            "--source",
            "checkout",
            "--proof",
            "box v3",
        ]);
    }
    let out = cli.ok(&["estimate", job.to_str().unwrap()]);
    assert!(
        out.contains("2 sendable (1 by WhatsApp, 1 by SMS), 1 without consent"),
        "{out}"
    );
}

/// The pixels of an 8-bit grayscale PNG and its side, decoded with a library herald did not
/// write its encoder against.
fn read_qr_png(path: &std::path::Path) -> String {
    let decoder = png::Decoder::new(std::io::BufReader::new(std::fs::File::open(path).unwrap()));
    let mut reader = decoder.read_info().unwrap();
    let mut pixels = vec![0; reader.output_buffer_size().unwrap()];
    let info = reader.next_frame(&mut pixels).unwrap();
    let side = info.width as usize;
    let mut image =
        rqrr::PreparedImage::prepare_from_greyscale(side, side, |x, y| pixels[y * side + x]);
    let grids = image.detect_grids();
    assert_eq!(grids.len(), 1, "one QR code");
    grids[0].decode().expect("the QR code decodes").1
}

#[test]
fn an_optin_link_is_printed_and_its_qr_code_decodes_back_to_it() {
    let cli = Cli::new();
    cli.ok(&[
        "senders",
        "add",
        "--id",
        "106540352242922",
        "--account",
        "102290129340398",
        "--display",
        "+49 30 901820",
    ]);
    let qr_dir = cli.dir.path().join("qr");
    std::fs::create_dir(&qr_dir).unwrap();
    let out = cli.ok(&[
        "optin",
        "link",
        "--sender",
        "106540352242922",
        "--keyword",
        "Sneaker Drop",
        "--category",
        "marketing",
        "--source",
        "poster-store-berlin",
        "--business",
        "ACME Sneakers",
        "--qr-dir",
        qr_dir.to_str().unwrap(),
    ]);
    let url = out.lines().last().unwrap().trim();
    assert_eq!(url, "https://wa.me/4930901820?text=SNEAKER%20DROP");
    let parsed = url::Url::parse(url).unwrap();
    let text: Vec<_> = parsed.query_pairs().collect();
    assert_eq!(text[0].1, "SNEAKER DROP");
    assert_eq!(read_qr_png(&qr_dir.join("optin-sneaker-drop.png")), url);
    let svg = std::fs::read_to_string(qr_dir.join("optin-sneaker-drop.svg")).unwrap();
    assert!(
        svg.starts_with("<?xml") && svg.contains("<svg"),
        "{svg:.80}"
    );
    // The link registered the keyword; the same link again changes nothing.
    let listed = cli.ok(&["optin", "keywords", "list"]);
    assert!(
        listed.contains("SNEAKER DROP\tmarketing\tposter-store-berlin\tACME Sneakers"),
        "{listed}"
    );
    cli.ok(&[
        "optin",
        "link",
        "--sender",
        "106540352242922",
        "--keyword",
        "sneaker drop",
        "--category",
        "marketing",
        "--source",
        "poster-store-berlin",
        "--business",
        "ACME Sneakers",
        "--qr-dir",
        qr_dir.to_str().unwrap(),
    ]);
    // Another source for the same keyword is a mistake, not a silent change.
    let err = cli.usage_error(&[
        "optin",
        "link",
        "--sender",
        "106540352242922",
        "--keyword",
        "SNEAKER DROP",
        "--category",
        "marketing",
        "--source",
        "instagram",
        "--qr-dir",
        qr_dir.to_str().unwrap(),
    ]);
    assert!(err.contains("poster-store-berlin"), "{err}");
    let removed = cli.ok(&[
        "optin",
        "keywords",
        "remove",
        "sneaker drop",
        "--sender",
        "106540352242922",
    ]);
    assert!(removed.contains("removed"), "{removed}");
    assert!(
        cli.ok(&["optin", "keywords", "list"])
            .contains("no opt-in keywords")
    );
}

#[test]
fn bad_optin_keywords_are_usage_errors() {
    let cli = Cli::new();
    cli.ok(&[
        "senders",
        "add",
        "--id",
        "106540352242922",
        "--account",
        "102290129340398",
        "--display",
        "+49 30 901820",
    ]);
    let add = |keyword: &str, extra: &[&str]| {
        let mut args = vec![
            "optin",
            "keywords",
            "add",
            keyword,
            "--sender",
            "106540352242922",
            "--category",
            "marketing",
            "--source",
            "poster",
            "--business",
            "ACME",
        ];
        args.extend_from_slice(extra);
        args.iter().map(|s| s.to_string()).collect::<Vec<_>>()
    };
    let run = |args: Vec<String>| {
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        cli.usage_error(&refs)
    };
    let err = run(add("Stop", &[]));
    assert!(err.contains("opt-out word"), "{err}");
    let err = run(add("sale?now", &[]));
    assert!(err.contains("letters, digits"), "{err}");
    let err = run(add(
        "JOIN",
        &["--confirmation", "Welcome! Reply STOP to end."],
    ));
    assert!(err.contains("name the business"), "{err}");
    let err = run(add("JOIN", &["--confirmation", "ACME: welcome!"]));
    assert!(err.contains("opt out"), "{err}");
    let err = cli.usage_error(&[
        "optin",
        "keywords",
        "add",
        "JOIN",
        "--sender",
        "999",
        "--category",
        "marketing",
        "--source",
        "poster",
    ]);
    assert!(err.contains("unknown sender"), "{err}");
    let err = cli.usage_error(&[
        "optin",
        "keywords",
        "remove",
        "JOIN",
        "--sender",
        "106540352242922",
    ]);
    assert!(err.contains("no keyword JOIN"), "{err}");
    // Nothing was registered by the refused commands.
    assert!(
        cli.ok(&["optin", "keywords", "list"])
            .contains("no opt-in keywords")
    );
}

/// The number in `class`'s row of `herald purge`'s table.
fn purged(out: &str, class: &str) -> u64 {
    let row = out
        .lines()
        .find(|l| l.split_whitespace().next() == Some(class))
        .unwrap_or_else(|| panic!("no {class} row in:\n{out}"));
    row.split_whitespace().last().unwrap().parse().unwrap()
}

#[test]
fn herald_purge_dry_run_counts_per_class_and_deletes_nothing() {
    let cli = Cli::new();
    let phone = "+4915112345678";
    let csv = cli.dir.path().join("consents.csv");
    std::fs::write(
        &csv,
        format!("phone,category,granted_at,source,proof\n{phone},marketing,2026-01-02T10:00:00Z,checkout,box v3\n"),
    )
    .unwrap();
    cli.ok(&["consent", "import", csv.to_str().unwrap()]);
    cli.ok(&["consent", "revoke", phone]);

    // The defaults keep a revoked consent's proof for three years after the revocation.
    let out = cli.ok(&["purge", "--dry-run", "--retention", ""]);
    assert!(out.contains("dry run: nothing deleted"), "{out}");
    for (class, kept) in [
        ("ledger", "400d"),
        ("inbound", "30d"),
        ("conversions", "400d"),
        ("consents", "1096d"),
        ("tier", "2d"),
        ("timers", "30d"),
        ("suppressions", "never"),
    ] {
        let row = out
            .lines()
            .find(|l| l.split_whitespace().next() == Some(class))
            .unwrap_or_else(|| panic!("no {class} row in:\n{out}"));
        assert!(row.contains(kept), "{row}");
        assert_eq!(purged(&out, class), 0, "{row}");
    }
    assert!(out.contains("0 row(s) would be deleted"), "{out}");

    // Kept for a millisecond, the consent and its revocation are due: counted, not deleted.
    let out = cli.ok(&["purge", "--dry-run", "--retention", "consents=1ms"]);
    assert_eq!(purged(&out, "consents"), 2, "{out}");
    assert_eq!(
        exported(&cli, phone)["revocations"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    let out = cli.ok(&["purge", "--retention", "consents=1ms"]);
    assert_eq!(purged(&out, "consents"), 2, "{out}");
    assert!(out.contains("2 row(s) deleted"), "{out}");
    let left = exported(&cli, phone);
    assert_eq!(left["consents"], serde_json::json!([]));
    assert_eq!(left["revocations"], serde_json::json!([]));
}

#[test]
fn a_bad_herald_retention_is_a_usage_error_naming_the_class() {
    let cli = Cli::new();
    let err = cli.usage_error(&["purge", "--dry-run", "--retention", "ledger=400d,inbox=30d"]);
    assert!(
        err.contains("HERALD_RETENTION") && err.contains("unknown data class 'inbox'"),
        "{err}"
    );
    let err = cli.usage_error(&["purge", "--retention", "inbound=a month"]);
    assert!(
        err.contains("inbound: 'a month' is not a duration"),
        "{err}"
    );
    let err = cli.usage_error(&["purge", "--retention", "tier=1h"]);
    assert!(err.contains("tier: 1h is shorter"), "{err}");
    // Refused from the environment too, and by the long-running processes before they start.
    let out = Command::new(env!("CARGO_BIN_EXE_herald"))
        .args(["worker"])
        .env("HERALD_RETENTION", "timers=forever")
        .env(
            "HERALD_DATABASE_URL",
            format!(
                "sqlite://{}?mode=rwc",
                cli.dir.path().join("w.db").display()
            ),
        )
        .env("HERALD_HTTP_ADDR", "127.0.0.1:0")
        .env("HERALD_METRICS_ADDR", "127.0.0.1:0")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("timers: 'forever'"),
        "{out:?}"
    );
}

#[test]
fn ratecard_check_passes_the_shipped_card_and_names_the_first_problem_of_a_broken_one() {
    let cli = Cli::new();
    let shipped = concat!(env!("CARGO_MANIFEST_DIR"), "/data/rate-card.json");
    let out = cli.ok(&["ratecard", "check", shipped]);
    assert!(out.contains("2 version(s)"), "{out}");
    assert!(out.contains("  2025-07-01: 33 markets"), "{out}");
    assert!(out.contains("  2026-10-01: 33 markets"), "{out}");

    let market = |id: &str, codes: &str| {
        format!(
            r#"{{"market":"{id}","calling_codes":[{codes}],"marketing":0.1,"utility":0.01,"authentication":0.01}}"#
        )
    };
    // Every country code but +998 (Uzbekistan) has a market here.
    let world = std::fs::read_to_string(shipped).unwrap();
    let file = cli.dir.path().join("card.json");
    let broken = [
        (
            world.replace(r#""998", "#, "").replace(r#", "998""#, ""),
            "country code +998 has no market",
        ),
        (
            format!(
                r#"{{"name":"t","currency":"USD","markets":[{},{}]}}"#,
                market("A", r#""49""#),
                market("B", r#""31","49""#)
            ),
            "calling code 49 is in market A and market B",
        ),
        (
            format!(
                r#"{{"name":"t","currency":"USD","markets":[{}]}}"#,
                market("A", r#""4a""#)
            ),
            "calling code '4a'",
        ),
        (
            format!(
                r#"{{"name":"t","currency":"USD","markets":[{}],
                    "tiers":{{"utility":[{{"from":0,"discount_percent":0}},{{"from":0,"discount_percent":5}}]}}}}"#,
                market("A", r#""1""#)
            ),
            "utility tiers not ascending",
        ),
        (
            format!(
                r#"{{"name":"t","currency":"USD","versions":[
                    {{"effective_from":"2026-10-01","markets":[{}]}},{{"effective_from":"2025-07-01"}}]}}"#,
                market("A", r#""1""#)
            ),
            "versions must be in order",
        ),
        (
            format!(
                r#"{{"name":"t","currency":"USD","markets":[{}]}}"#,
                market("A", r#""1""#).replace("0.1,", "-0.1,")
            ),
            "marketing price -0.1 out of range",
        ),
        ("{".to_owned(), "rate card is not valid"),
    ];
    for (body, problem) in broken {
        std::fs::write(&file, &body).unwrap();
        let err = cli.usage_error(&["ratecard", "check", file.to_str().unwrap()]);
        assert!(err.contains(problem), "{problem}: {err}");
    }
}

#[test]
fn the_estimate_counts_us_marketing_as_unsupported_and_shows_the_tier_effect() {
    let cli = Cli::new();
    let grant = |to: &str, category: &str| {
        cli.ok(&[
            "consent",
            "grant",
            to,
            "--category",
            category,
            "--source",
            "checkout",
            "--proof",
            "box v3",
        ]);
    };
    let job = cli.dir.path().join("job.json");
    std::fs::write(
        &job,
        r#"{"version": 1, "job_id": "j-us", "campaign_id": "c-us", "sender": "106540352242922",
            "template": {"name": "flash_sale", "language": "en", "category": "marketing"},
            "recipients": [{"to": "+12025550123"}, {"to": "+4915112345678"}]}"#,
    )
    .unwrap();
    grant("+12025550123", "marketing");
    grant("+4915112345678", "marketing");
    let out = cli.ok(&["estimate", job.to_str().unwrap()]);
    assert!(
        out.contains("1 sendable (1 by WhatsApp, 0 by SMS)"),
        "{out}"
    );
    assert!(
        out.contains("1 marketing template(s) to markets Meta does not deliver them to"),
        "{out}"
    );
    assert!(
        out.contains("  whatsapp  marketing      DE                1 × 0.1365 USD = 0.1365 USD"),
        "{out}"
    );

    // Utility to India, the month's 100,000th and 100,001st: the second is 5 % off.
    std::fs::write(
        &job,
        r#"{"version": 1, "job_id": "j-in", "campaign_id": "c-in", "sender": "106540352242922",
            "template": {"name": "order_update", "language": "en", "category": "utility"},
            "recipients": [{"to": "+919876543210"}, {"to": "+919876543211"}]}"#,
    )
    .unwrap();
    grant("+919876543210", "utility");
    grant("+919876543211", "utility");
    let out = cli.ok(&[
        "estimate",
        job.to_str().unwrap(),
        "--month-to-date",
        "99999",
    ]);
    assert!(
        out.contains("2 × 0.0014 USD = 0.0028 USD − volume tiers 0.00007 USD = 0.00273 USD"),
        "{out}"
    );
    assert!(out.contains("estimated cost: 0.00273 USD"), "{out}");
    let out = cli.ok(&["estimate", job.to_str().unwrap()]);
    assert!(out.contains("estimated cost: 0.0028 USD"), "{out}");
}

#[test]
fn the_estimate_skips_unpriced_markets_only_for_a_campaign_with_a_budget() {
    let cli = Cli::new();
    let card = cli.dir.path().join("card.json");
    std::fs::write(
        &card,
        r#"{"name":"de only","currency":"USD","markets":[{"market":"DE","calling_codes":["49"],
            "marketing":0.1365,"utility":0.055,"authentication":0.055}]}"#,
    )
    .unwrap();
    let job = cli.dir.path().join("job.json");
    std::fs::write(
        &job,
        r#"{"version": 1, "job_id": "j-fr", "campaign_id": "c-fr", "sender": "106540352242922",
            "template": {"name": "flash_sale", "language": "de", "category": "marketing"},
            "recipients": [{"to": "+33612345678"}, {"to": "+4915112345678"}]}"#,
    )
    .unwrap();
    for to in ["+33612345678", "+4915112345678"] {
        cli.ok(&[
            "consent",
            "grant",
            to,
            "--category",
            "marketing",
            "--source",
            "checkout",
            "--proof",
            "box v3",
        ]);
    }
    let estimate = || {
        cli.ok(&[
            "estimate",
            job.to_str().unwrap(),
            "--rate-card",
            card.to_str().unwrap(),
        ])
    };
    let out = estimate();
    assert!(out.contains("2 sendable"), "{out}");
    assert!(
        out.contains(
            "1 message(s) to markets the rate card does not price: sent and counted unpriced"
        ),
        "{out}"
    );
    cli.ok(&["campaign", "budget", "c-fr", "--amount", "10"]);
    let out = estimate();
    assert!(out.contains("1 sendable (1 by WhatsApp"), "{out}");
    assert!(out.contains("skipped unpriced_market"), "{out}");
}

#[test]
fn bad_recipient_events_settings_are_usage_errors_naming_them() {
    let cli = Cli::new();
    let err = cli.usage_error(&[
        "serve",
        "--app-secret",
        "app-secret",
        "--http-addr",
        "127.0.0.1:0",
        "--metrics-addr",
        "127.0.0.1:0",
        "--recipient-events",
        "webhook",
    ]);
    assert!(err.contains("HERALD_EVENTS_WEBHOOK_URL"), "{err}");
    let err = cli.usage_error(&[
        "worker",
        "--http-addr",
        "127.0.0.1:0",
        "--metrics-addr",
        "127.0.0.1:0",
        "--recipient-events",
        "webhook",
        "--events-webhook-url",
        "https://crm.example/herald",
        "--events-webhook-secret",
        "short",
    ]);
    assert!(err.contains("HERALD_EVENTS_WEBHOOK_SECRET"), "{err}");
    assert!(!err.contains("short"), "the secret is never echoed: {err}");
    let err = cli.usage_error(&[
        "conversions",
        "import",
        "x.csv",
        "--recipient-events",
        "kafka",
    ]);
    assert!(
        err.contains("kafka") && err.contains("recipient-events"),
        "{err}"
    );
}

/// The engine's tuning knobs of this session refuse values that make no sense, naming the flag
/// or variable: `--mark-ahead-ms` 0 (nothing marked ahead) or above a second, and
/// `HERALD_GRAPH_HTTP2_CONNECTIONS` 0 or above 1,000.
#[test]
fn bad_mark_ahead_and_http2_connections_are_usage_errors() {
    let cli = Cli::new();
    let job = cli.dir.path().join("job.json");
    std::fs::write(
        &job,
        r#"{"version": 1, "job_id": "j", "campaign_id": "c", "sender": "106540352242922",
            "template": {"name": "flash_sale", "language": "de", "category": "marketing"},
            "recipients": [{"to": "+4915112345678"}]}"#,
    )
    .unwrap();
    let job = job.to_str().unwrap();
    for bad in ["0", "1001"] {
        let err = cli.usage_error(&["send", job, "--mark-ahead-ms", bad]);
        assert!(
            err.contains("--mark-ahead-ms must be between 1 and 1000"),
            "{err}"
        );
    }
    for bad in ["0", "1001"] {
        let err = cli.usage_error(&["send", job, "--graph-http2-connections", bad]);
        assert!(
            err.contains("HERALD_GRAPH_HTTP2_CONNECTIONS must be between 1 and 1000"),
            "{err}"
        );
    }
}
