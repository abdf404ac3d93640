//! Opt-out words. Meta does not act on "STOP": a business must recognise opt-out messages
//! itself, in the languages its customers write. A message is an opt-out when, ignoring case,
//! surrounding punctuation or emoji and extra spaces, it *is* one of the words — "stop" and
//! "STOP!" are, "don't stop the offers" is not.

use std::collections::HashSet;

/// The opt-out words herald knows without configuration: the keywords carriers and
/// messaging platforms standardised in English, German, Spanish and French. Deliberately
/// without words like CANCEL or END, which customers also write about an order; add them with
/// `--opt-out-words` where they mean opt-out for your audience.
pub const DEFAULT_OPT_OUT_WORDS: &str = "STOP,STOPP,STOP ALL,STOPALL,UNSUBSCRIBE,OPT OUT,OPT-OUT,\
OPTOUT,ABMELDEN,ABBESTELLEN,DESINSCRIBIR,DESUSCRIBIR,BAJA,ARRET,ARRÊT,DESABONNER,DÉSABONNER";

/// The configured opt-out words, normalised once.
#[derive(Debug, Clone)]
pub struct OptOutWords {
    words: HashSet<String>,
}

impl OptOutWords {
    /// Parses a comma-separated list (`STOP, Abmelden, …`). Empty entries are ignored; a list
    /// with no word at all is refused, because it would silently disable opt-out handling.
    pub fn parse(list: &str) -> Result<Self, String> {
        let words: HashSet<String> = list
            .split(',')
            .map(normalise)
            .filter(|w| !w.is_empty())
            .collect();
        if words.is_empty() {
            return Err(
                "the opt-out word list is empty; inbound STOP messages would be ignored".into(),
            );
        }
        Ok(Self { words })
    }

    /// The opt-out word `text` consists of, in upper case (as recorded in the revocation's
    /// source), or `None` when the message is something else.
    pub fn matches(&self, text: &str) -> Option<String> {
        let normalised = normalise(text);
        self.words
            .contains(&normalised)
            .then(|| normalised.to_uppercase())
    }
}

impl Default for OptOutWords {
    fn default() -> Self {
        Self::parse(DEFAULT_OPT_OUT_WORDS).expect("the built-in list is not empty")
    }
}

/// Lower case, without leading or trailing non-alphanumerics (spaces, `!`, `.`, emoji), inner
/// whitespace collapsed to one space.
fn normalise(text: &str) -> String {
    text.trim_matches(|c: char| !c.is_alphanumeric())
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .to_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stop_in_any_case_and_spacing_is_an_opt_out() {
        let words = OptOutWords::default();
        for text in [
            "STOP",
            "stop",
            " Stop ",
            "STOP!",
            "stop.",
            "🛑 STOP",
            "\tstopp\n",
            "Stop  all",
        ] {
            assert!(words.matches(text).is_some(), "{text:?}");
        }
        assert_eq!(words.matches(" abmelden ").as_deref(), Some("ABMELDEN"));
        assert_eq!(words.matches("Désabonner").as_deref(), Some("DÉSABONNER"));
    }

    #[test]
    fn messages_that_merely_contain_a_word_are_not_opt_outs() {
        let words = OptOutWords::default();
        for text in [
            "don't stop the offers",
            "stopover",
            "where is my order?",
            "",
            "!!!",
        ] {
            assert_eq!(words.matches(text), None, "{text:?}");
        }
    }

    #[test]
    fn a_configured_list_replaces_the_default() {
        let words = OptOutWords::parse("Cancel, END ,,").unwrap();
        assert_eq!(words.matches("cancel").as_deref(), Some("CANCEL"));
        assert_eq!(words.matches("end").as_deref(), Some("END"));
        assert_eq!(words.matches("STOP"), None);
    }

    #[test]
    fn an_empty_list_is_refused() {
        assert!(OptOutWords::parse(" , ,").is_err());
    }
}
