//! Click-to-chat opt-in (DESIGN §1.6): which inbound message is an opt-in, the consent and
//! proof it records, and the confirmation it is answered with. Plain functions over what the
//! webhook and the store said.

use chrono::SecondsFormat;

use crate::domain::inbound::{
    InboundMessage, KeywordError, MAX_KEYWORD_CHARS, OptInKeyword, check_keyword, normalise_keyword,
};
use crate::domain::{Consent, SenderId};
use crate::policy::opt_out::OptOutWords;

/// Longest confirmation text (a WhatsApp text message's limit).
pub const MAX_CONFIRMATION_CHARS: usize = 4096;

/// The confirmation sent when none is configured: names the business and says how to opt out.
pub fn default_confirmation(business: &str, category: &str) -> String {
    format!(
        "{business}: thank you — you will now get {category} messages from {business} on WhatsApp. \
         Reply STOP at any time to unsubscribe."
    )
}

/// Checks a keyword for registration; returns it normalised. A keyword that is an opt-out
/// word is refused: writing it must unsubscribe, not subscribe.
pub fn check_new_keyword(raw: &str, words: &OptOutWords) -> Result<String, KeywordError> {
    let keyword = check_keyword(raw)?;
    debug_assert!(keyword.chars().count() <= MAX_KEYWORD_CHARS);
    if words.matches(&keyword).is_some() {
        return Err(KeywordError::OptOutWord(keyword));
    }
    Ok(keyword)
}

/// Checks a confirmation: it must name the business and say how to opt out (mention an
/// opt-out word), as consent rules ask of the first message after an opt-in.
pub fn check_confirmation(
    text: &str,
    business: &str,
    words: &OptOutWords,
) -> Result<(), KeywordError> {
    let chars = text.chars().count();
    if chars > MAX_CONFIRMATION_CHARS {
        return Err(KeywordError::ConfirmationTooLong(chars));
    }
    if business.trim().is_empty()
        || !text
            .to_lowercase()
            .contains(&business.trim().to_lowercase())
    {
        return Err(KeywordError::ConfirmationWithoutBusiness(
            business.to_owned(),
        ));
    }
    let mentions_opt_out = text
        .split(|c: char| !c.is_alphanumeric() && c != '-')
        .any(|w| !w.is_empty() && words.matches(w).is_some());
    if !mentions_opt_out {
        return Err(KeywordError::ConfirmationWithoutOptOut);
    }
    Ok(())
}

/// The keyword an inbound message is, if any: one of its texts is, as a whole, a keyword
/// registered for the business number it was written to.
pub fn matching<'a>(
    texts: &'a [String],
    sender: &SenderId,
    keywords: &'a [OptInKeyword],
) -> Option<(&'a OptInKeyword, &'a str)> {
    texts.iter().find_map(|text| {
        let normalised = normalise_keyword(text);
        keywords
            .iter()
            .find(|k| &k.sender == sender && k.keyword == normalised)
            .map(|k| (k, text.as_str()))
    })
}

/// The consent an opt-in records: the keyword's category on WhatsApp, granted when the
/// customer wrote, with the proof (which message, when, what it said, where the link was).
pub fn consent(m: &InboundMessage, keyword: &OptInKeyword, text: &str) -> Consent {
    Consent {
        phone: m.from.clone(),
        category: keyword.category,
        channel: OptInKeyword::CHANNEL,
        granted_at: m.at,
        source: format!("optin:{}", keyword.source),
        proof: format!(
            "WhatsApp message {} to {} at {}: \"{}\" (keyword {}, link published at {})",
            m.wamid,
            m.sender,
            m.at.to_rfc3339_opts(SecondsFormat::Secs, true),
            text.chars()
                .filter(|c| !c.is_control())
                .take(200)
                .collect::<String>(),
            keyword.keyword,
            keyword.source
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{Category, ChannelKind, PhoneNumber};
    use chrono::{TimeZone, Utc};

    fn keyword(word: &str, sender: &str) -> OptInKeyword {
        OptInKeyword {
            keyword: word.into(),
            sender: SenderId::parse(sender).unwrap(),
            category: Category::Marketing,
            source: "poster-berlin".into(),
            business: "ACME".into(),
            confirmation: default_confirmation("ACME", "marketing"),
            created_at: Utc::now(),
        }
    }

    #[test]
    fn opt_out_words_can_not_be_keywords() {
        let words = OptOutWords::default();
        assert_eq!(check_new_keyword(" sneakers ", &words).unwrap(), "SNEAKERS");
        assert!(matches!(
            check_new_keyword("Stop", &words),
            Err(KeywordError::OptOutWord(w)) if w == "STOP"
        ));
        assert!(check_new_keyword("abmelden!", &words).is_err());
        assert!(check_new_keyword("STOP SNEAKERS", &words).is_ok());
    }

    #[test]
    fn a_confirmation_names_the_business_and_the_way_out() {
        let words = OptOutWords::default();
        let ok = default_confirmation("ACME Sneakers", "marketing");
        assert_eq!(check_confirmation(&ok, "ACME Sneakers", &words), Ok(()));
        assert!(matches!(
            check_confirmation("Thanks! Reply STOP to end.", "ACME", &words),
            Err(KeywordError::ConfirmationWithoutBusiness(_))
        ));
        assert_eq!(
            check_confirmation("ACME: welcome!", "ACME", &words),
            Err(KeywordError::ConfirmationWithoutOptOut)
        );
        assert_eq!(
            check_confirmation("ACME: Danke! Abmelden: ABMELDEN senden.", "acme", &words),
            Ok(())
        );
    }

    #[test]
    fn a_message_matches_a_keyword_of_its_number_whole_and_without_case() {
        let keywords = [
            keyword("SNEAKERS", "106540352242922"),
            keyword("JOIN", "999"),
        ];
        let sender = SenderId::parse("106540352242922").unwrap();
        let texts = |t: &[&str]| t.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let sent = texts(&["  sneakers! "]);
        let hit = matching(&sent, &sender, &keywords).unwrap();
        assert_eq!(hit.0.keyword, "SNEAKERS");
        assert_eq!(hit.1, "  sneakers! ");
        assert!(matching(&texts(&["I want sneakers"]), &sender, &keywords).is_none());
        assert!(
            matching(&texts(&["JOIN"]), &sender, &keywords).is_none(),
            "other number's keyword"
        );
        assert!(matching(&texts(&["PROMO_YES", "Sneakers"]), &sender, &keywords).is_some());
    }

    #[test]
    fn the_consent_keeps_its_proof() {
        let at = Utc.with_ymd_and_hms(2026, 11, 27, 9, 0, 0).unwrap();
        let m = InboundMessage {
            wamid: "wamid.X".into(),
            from: PhoneNumber::parse("+4915123456789").unwrap(),
            sender: SenderId::parse("106540352242922").unwrap(),
            at,
            kind: "text",
            referral: false,
            proof_text: None,
        };
        let c = consent(&m, &keyword("SNEAKERS", "106540352242922"), "Sneakers");
        assert_eq!(c.category, Category::Marketing);
        assert_eq!(c.channel, ChannelKind::WhatsApp);
        assert_eq!(c.granted_at, at);
        assert_eq!(c.source, "optin:poster-berlin");
        assert!(
            c.proof.contains("wamid.X") && c.proof.contains("\"Sneakers\""),
            "{}",
            c.proof
        );
        assert!(c.proof.contains("2026-11-27T09:00:00Z"), "{}", c.proof);
    }
}
