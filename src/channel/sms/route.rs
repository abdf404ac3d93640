//! An SMS route from `HERALD_SMS_URL` (DESIGN §1.1): `smpp://system_id:password@host:port`
//! (`smpps://` for TLS) with query options for what a provider's account fixes — its TPS,
//! the session window, the source address's TON/NPI, the system type, timers, how receipts
//! name message ids. Parsed once at start-up; every error names the part, never the password.

use std::time::Duration;

use url::Url;

/// How a provider's receipts name the message id `submit_sm_resp` gave.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReceiptIds {
    /// The same form, or — when nothing matches — the same number in the other base.
    Auto,
    /// Always the same form.
    Same,
    /// `submit_sm_resp` gives hex, receipts the same number in decimal.
    Decimal,
    /// `submit_sm_resp` gives decimal, receipts the same number in hex.
    Hex,
}

/// One SMPP account at one provider.
#[derive(Clone, PartialEq, Eq)]
pub struct SmsRoute {
    /// The route's name in metrics, logs and the pacing table: `name=` or `host:port`.
    pub name: String,
    pub host: String,
    pub port: u16,
    pub tls: bool,
    pub system_id: String,
    pub password: String,
    pub system_type: String,
    /// Messages per second the account allows (all binds, all workers).
    pub tps: u32,
    /// `submit_sm` outstanding without a response, per session.
    pub window: usize,
    /// TON/NPI of `source_addr`; `None`: chosen per sender ID (alphanumeric 5/0, number 1/1).
    pub source_ton: Option<u8>,
    pub source_npi: Option<u8>,
    pub enquire_link: Duration,
    /// How long a `submit_sm_resp` may take before the message counts as `unknown`.
    pub response_timeout: Duration,
    pub receipt_ids: ReceiptIds,
}

impl std::fmt::Debug for SmsRoute {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the password.
        f.debug_struct("SmsRoute")
            .field("name", &self.name)
            .field("host", &self.host)
            .field("port", &self.port)
            .field("tls", &self.tls)
            .field("system_id", &self.system_id)
            .field("tps", &self.tps)
            .field("window", &self.window)
            .finish_non_exhaustive()
    }
}

/// The SMPP port most providers use.
pub const DEFAULT_PORT: u16 = 2775;
/// TPS when the URL names none: low enough for any account; say `tps=` for more.
pub const DEFAULT_TPS: u32 = 10;
pub const DEFAULT_WINDOW: usize = 10;

impl SmsRoute {
    /// Parses `HERALD_SMS_URL`.
    pub fn parse(raw: &str) -> Result<Self, String> {
        let url =
            Url::parse(raw.trim()).map_err(|e| format!("HERALD_SMS_URL is not a URL: {e}"))?;
        let tls = match url.scheme() {
            "smpp" => false,
            "smpps" => true,
            "http" | "https" => {
                return Err("HERALD_SMS_URL: HTTP SMS providers are not supported yet; \
                            use smpp://system_id:password@host:port"
                    .into());
            }
            other => {
                return Err(format!(
                    "HERALD_SMS_URL: scheme `{other}` is not smpp:// or smpps://"
                ));
            }
        };
        let host = url
            .host_str()
            .filter(|h| !h.is_empty())
            .ok_or("HERALD_SMS_URL has no host")?
            .trim_matches(['[', ']'])
            .to_owned();
        let port = url.port().unwrap_or(DEFAULT_PORT);
        let decode = |s: &str| {
            url::form_urlencoded::parse(format!("x={s}").as_bytes())
                .next()
                .map(|(_, v)| v.into_owned())
                .unwrap_or_default()
        };
        let system_id = decode(url.username());
        if system_id.is_empty() || system_id.len() > 15 {
            return Err(
                "HERALD_SMS_URL: the system_id (user part) must be 1 to 15 characters".into(),
            );
        }
        let password = url.password().map(decode).unwrap_or_default();
        if password.len() > 8 {
            return Err("HERALD_SMS_URL: an SMPP 3.4 password is at most 8 characters".into());
        }
        let mut route = SmsRoute {
            name: format!("{host}:{port}"),
            host,
            port,
            tls,
            system_id,
            password,
            system_type: String::new(),
            tps: DEFAULT_TPS,
            window: DEFAULT_WINDOW,
            source_ton: None,
            source_npi: None,
            enquire_link: Duration::from_secs(30),
            response_timeout: Duration::from_secs(10),
            receipt_ids: ReceiptIds::Auto,
        };
        for (k, v) in url.query_pairs() {
            let number = |max: u64| -> Result<u64, String> {
                v.parse::<u64>()
                    .ok()
                    .filter(|n| (1..=max).contains(n))
                    .ok_or_else(|| {
                        format!("HERALD_SMS_URL: `{k}` must be a number from 1 to {max}")
                    })
            };
            let small = |max: u64| -> Result<u8, String> {
                v.parse::<u8>()
                    .ok()
                    .filter(|n| u64::from(*n) <= max)
                    .ok_or_else(|| {
                        format!("HERALD_SMS_URL: `{k}` must be a number from 0 to {max}")
                    })
            };
            let duration = || -> Result<Duration, String> {
                humantime::parse_duration(&v)
                    .ok()
                    .filter(|d| *d >= Duration::from_millis(100) && *d <= Duration::from_secs(600))
                    .ok_or_else(|| {
                        format!(
                            "HERALD_SMS_URL: `{k}` must be a duration from 100ms to 10m (e.g. 30s)"
                        )
                    })
            };
            match k.as_ref() {
                "name" => {
                    if v.is_empty()
                        || v.len() > 64
                        || !v
                            .chars()
                            .all(|c| c.is_ascii_alphanumeric() || "-_.:".contains(c))
                    {
                        return Err(
                            "HERALD_SMS_URL: `name` must be 1 to 64 letters, digits or -_.:".into(),
                        );
                    }
                    route.name = v.into_owned();
                }
                "tps" => route.tps = number(100_000)? as u32,
                "window" => route.window = number(1_000)? as usize,
                "source_ton" => route.source_ton = Some(small(6)?),
                "source_npi" => route.source_npi = Some(small(18)?),
                "system_type" => {
                    if v.len() > 12 {
                        return Err("HERALD_SMS_URL: `system_type` is at most 12 characters".into());
                    }
                    route.system_type = v.into_owned();
                }
                "enquire_link" => route.enquire_link = duration()?,
                "response_timeout" => route.response_timeout = duration()?,
                "receipt_ids" => {
                    route.receipt_ids = match v.as_ref() {
                        "auto" => ReceiptIds::Auto,
                        "same" => ReceiptIds::Same,
                        "decimal" => ReceiptIds::Decimal,
                        "hex" => ReceiptIds::Hex,
                        _ => {
                            return Err(
                                "HERALD_SMS_URL: `receipt_ids` is auto, same, decimal or hex"
                                    .into(),
                            );
                        }
                    }
                }
                other => {
                    return Err(format!(
                        "HERALD_SMS_URL: unknown option `{other}` (known: name, tps, window, \
                         source_ton, source_npi, system_type, enquire_link, response_timeout, \
                         receipt_ids)"
                    ));
                }
            }
        }
        Ok(route)
    }

    /// The key the route's TPS is paced under, shared by every worker (the pacing table names
    /// WhatsApp numbers by their id; a route cannot collide with one).
    pub fn pacing_key(&self) -> String {
        format!("sms:{}", self.name)
    }

    /// TON/NPI for `source_addr`: the URL's, else 5/0 for an alphanumeric sender ID and 1/1
    /// for a number.
    pub fn source_ton_npi(&self, from: &str) -> (u8, u8) {
        let numeric = from
            .strip_prefix('+')
            .unwrap_or(from)
            .bytes()
            .all(|b| b.is_ascii_digit());
        let (ton, npi) = if numeric { (1, 1) } else { (5, 0) };
        (
            self.source_ton.unwrap_or(ton),
            self.source_npi.unwrap_or(npi),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_url_sets_every_option() {
        let r = SmsRoute::parse(
            "smpps://acme%40x:s3cr%2Ft@smsc.example.com:3550?tps=50&window=20&source_ton=1\
             &source_npi=1&system_type=VMA&enquire_link=45s&response_timeout=5s&name=eu-1\
             &receipt_ids=decimal",
        )
        .unwrap();
        assert_eq!(r.host, "smsc.example.com");
        assert_eq!(r.port, 3550);
        assert!(r.tls);
        assert_eq!(r.system_id, "acme@x");
        assert_eq!(r.password, "s3cr/t");
        assert_eq!((r.tps, r.window), (50, 20));
        assert_eq!((r.source_ton, r.source_npi), (Some(1), Some(1)));
        assert_eq!(r.system_type, "VMA");
        assert_eq!(r.enquire_link, Duration::from_secs(45));
        assert_eq!(r.response_timeout, Duration::from_secs(5));
        assert_eq!(r.name, "eu-1");
        assert_eq!(r.pacing_key(), "sms:eu-1");
        assert_eq!(r.receipt_ids, ReceiptIds::Decimal);
        assert!(!format!("{r:?}").contains("s3cr"));
    }

    #[test]
    fn defaults_and_source_addresses() {
        let r = SmsRoute::parse("smpp://herald:secret@127.0.0.1").unwrap();
        assert_eq!((r.port, r.tls, r.tps, r.window), (2775, false, 10, 10));
        assert_eq!(r.name, "127.0.0.1:2775");
        assert_eq!(r.source_ton_npi("ACME"), (5, 0));
        assert_eq!(r.source_ton_npi("+4915112345678"), (1, 1));
    }

    #[test]
    fn bad_urls_say_what_is_wrong_without_the_password() {
        for (url, needle) in [
            ("smpp://127.0.0.1:2775", "system_id"),
            ("ftp://a:b@h", "scheme"),
            ("https://api.example.com/sms", "HTTP"),
            ("smpp://a:b@h?tps=0", "`tps`"),
            ("smpp://a:b@h?tps=fast", "`tps`"),
            ("smpp://a:b@h?window=0", "`window`"),
            ("smpp://a:b@h?source_ton=9", "`source_ton`"),
            ("smpp://a:b@h?enquire_link=1ms", "`enquire_link`"),
            ("smpp://a:b@h?colour=red", "unknown option `colour`"),
            ("smpp://a:toolongpassword@h", "8 characters"),
            ("not a url", "not a URL"),
        ] {
            let err = SmsRoute::parse(url).unwrap_err();
            assert!(err.contains(needle), "{url}: {err}");
            assert!(!err.contains("toolongpassword"), "{err}");
        }
    }
}
