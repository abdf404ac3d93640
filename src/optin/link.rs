//! Click-to-chat opt-in links: `https://wa.me/<number>?text=<keyword>` opens a chat with the
//! business with the opt-in keyword already typed, so the customer's first message is the
//! opt-in. Pure string work; nothing here sends or stores anything.

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};

/// Fewest digits a business number can have with its country code (short national numbers
/// of small countries, e.g. `+290 2222`).
const MIN_NUMBER_DIGITS: usize = 7;

/// E.164's upper bound: country code and number together are at most 15 digits.
const MAX_NUMBER_DIGITS: usize = 15;

/// Longest prefilled text accepted, in characters. A keyword is a word or two; the bound
/// catches a pasted paragraph before it becomes a link no QR code can hold.
const MAX_TEXT_CHARS: usize = 1000;

/// Everything but RFC 3986's unreserved characters (`A-Za-z0-9-._~`) is percent-encoded, so
/// the text survives as one query value: `&`, `#`, `+` and `=` are escaped, a space is `%20`.
const QUERY_VALUE: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// Why a link could not be made; each message says what to change.
#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    #[error(
        "the business number contains {found:?}: write it with digits only, optionally with a \
         leading '+' and spaces, dashes, dots or parentheses between them (+49 30 901820)"
    )]
    NumberCharacter { found: char },
    #[error(
        "the business number has {digits} digits: it needs {MIN_NUMBER_DIGITS} to \
         {MAX_NUMBER_DIGITS}, country code included (+49 30 901820)"
    )]
    NumberLength { digits: usize },
    #[error(
        "the business number starts with 0: write it in international form, country code \
         first and without a trunk 0 or a 00 prefix (+49 30 901820, not 030 901820)"
    )]
    NumberLeadingZero,
    #[error("the prefilled text is empty: give the keyword customers send to opt in")]
    TextEmpty,
    #[error("the prefilled text has {chars} characters: shorten it to at most {MAX_TEXT_CHARS}")]
    TextTooLong { chars: usize },
    #[error(
        "the prefilled text has a control character (U+{code:04X}) at character {position}: \
         remove line breaks, tabs and other control characters"
    )]
    TextControlCharacter { code: u32, position: usize },
}

/// The click-to-chat link that opens a chat with `business_number` with `text` already typed:
/// `https://wa.me/4930901820?text=JOIN`.
///
/// `business_number` is the business's display number in any common form (`+49 30 901820`,
/// `+49-30-901820`, `4930901820`); only its digits go into the link. `text` goes in as given
/// (not trimmed), percent-encoded with the `percent-encoding` crate (the one `url` uses) for
/// RFC 3986's unreserved set: `url`'s own query serialiser follows HTML forms instead, writing
/// a space as `+`, which some WhatsApp clients would show as a literal plus.
pub fn wa_me_link(business_number: &str, text: &str) -> Result<String, LinkError> {
    let digits = number_digits(business_number)?;
    check_text(text)?;
    let encoded = utf8_percent_encode(text, QUERY_VALUE);
    Ok(format!("https://wa.me/{digits}?text={encoded}"))
}

/// The text the customer sends to opt in: the keyword alone, or `intro` followed by a space
/// and the keyword (`"Hi, sign me up for offers JOIN"`). Both are trimmed; an empty intro
/// counts as none.
///
/// Herald matches the *whole* inbound message against the keyword, so with an intro the
/// inbound side must accept the whole prefilled text as well; the keyword alone is the form
/// that matches as is.
pub fn prefilled_text(keyword: &str, intro: Option<&str>) -> String {
    let keyword = keyword.trim();
    match intro.map(str::trim).filter(|intro| !intro.is_empty()) {
        Some(intro) => format!("{intro} {keyword}"),
        None => keyword.to_owned(),
    }
}

/// The digits of a display number, or why it is not one: separators are dropped, a `+` is
/// accepted only in front, and the digits must be a plausible international number.
fn number_digits(business_number: &str) -> Result<String, LinkError> {
    let trimmed = business_number.trim();
    let unsigned = trimmed.strip_prefix('+').unwrap_or(trimmed);
    let mut digits = String::with_capacity(unsigned.len());
    for c in unsigned.chars() {
        match c {
            '0'..='9' => digits.push(c),
            ' ' | '-' | '(' | ')' | '.' => {}
            found => return Err(LinkError::NumberCharacter { found }),
        }
    }
    if !(MIN_NUMBER_DIGITS..=MAX_NUMBER_DIGITS).contains(&digits.len()) {
        return Err(LinkError::NumberLength {
            digits: digits.len(),
        });
    }
    // No country code starts with 0: a leading 0 is a national trunk prefix or the 00 of
    // international dialling, and wa.me would read the digits after it as a wrong number.
    if digits.starts_with('0') {
        return Err(LinkError::NumberLeadingZero);
    }
    Ok(digits)
}

fn check_text(text: &str) -> Result<(), LinkError> {
    if text.trim().is_empty() {
        return Err(LinkError::TextEmpty);
    }
    let chars = text.chars().count();
    if chars > MAX_TEXT_CHARS {
        return Err(LinkError::TextTooLong { chars });
    }
    if let Some((position, c)) = text.chars().enumerate().find(|(_, c)| c.is_control()) {
        return Err(LinkError::TextControlCharacter {
            code: c.into(),
            position: position + 1,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_plain_keyword_is_the_whole_query_value() {
        assert_eq!(
            wa_me_link("+49 30 901820", "JOIN").unwrap(),
            "https://wa.me/4930901820?text=JOIN"
        );
    }

    #[test]
    fn spaces_umlauts_and_url_delimiters_are_percent_encoded() {
        assert_eq!(
            wa_me_link("4930901820", "Grüße & Angebote? #1 + mehr").unwrap(),
            "https://wa.me/4930901820?text=\
             Gr%C3%BC%C3%9Fe%20%26%20Angebote%3F%20%231%20%2B%20mehr"
        );
    }

    #[test]
    fn unreserved_characters_stay_as_they_are() {
        assert_eq!(
            wa_me_link("4930901820", "a-b.c_d~e=f/g").unwrap(),
            "https://wa.me/4930901820?text=a-b.c_d~e%3Df%2Fg"
        );
    }

    #[test]
    fn the_number_keeps_only_its_digits_in_any_common_form() {
        for number in [
            "+49 30 901820",
            "4930901820",
            "+49-30-901820",
            "+49 (30) 901820",
            "+49.30.901820",
            "  +49 30 901820\n",
        ] {
            assert_eq!(
                wa_me_link(number, "JOIN").unwrap(),
                "https://wa.me/4930901820?text=JOIN",
                "{number:?}"
            );
        }
    }

    #[test]
    fn seven_and_fifteen_digits_are_the_bounds() {
        assert!(wa_me_link("+290 2222", "JOIN").is_ok());
        assert!(wa_me_link("+1 234 567 890 123 45", "JOIN").is_ok());
        assert!(matches!(
            wa_me_link("+290 222", "JOIN"),
            Err(LinkError::NumberLength { digits: 6 })
        ));
        assert!(matches!(
            wa_me_link("+1 234 567 890 123 456", "JOIN"),
            Err(LinkError::NumberLength { digits: 16 })
        ));
    }

    #[test]
    fn an_empty_number_has_no_digits() {
        assert!(matches!(
            wa_me_link("  ", "JOIN"),
            Err(LinkError::NumberLength { digits: 0 })
        ));
    }

    #[test]
    fn letters_slashes_and_inner_plus_signs_are_refused_by_name() {
        for (number, found) in [
            ("+49 30 90182O", 'O'),
            ("+49/30/901820", '/'),
            ("49 30+901820", '+'),
            ("++49 30 901820", '+'),
            ("tel:+4930901820", 't'),
        ] {
            match wa_me_link(number, "JOIN") {
                Err(LinkError::NumberCharacter { found: got }) => assert_eq!(got, found),
                other => panic!("{number:?}: {other:?}"),
            }
        }
    }

    #[test]
    fn national_and_double_zero_forms_are_refused() {
        for number in ["030 901820", "0049 30 901820"] {
            assert!(
                matches!(
                    wa_me_link(number, "JOIN"),
                    Err(LinkError::NumberLeadingZero)
                ),
                "{number:?}"
            );
        }
    }

    #[test]
    fn blank_text_is_refused() {
        for text in ["", "   "] {
            assert!(matches!(
                wa_me_link("4930901820", text),
                Err(LinkError::TextEmpty)
            ));
        }
    }

    #[test]
    fn text_over_a_thousand_characters_is_refused() {
        let at_limit = "ü".repeat(1000);
        assert!(wa_me_link("4930901820", &at_limit).is_ok());
        assert!(matches!(
            wa_me_link("4930901820", &format!("{at_limit}x")),
            Err(LinkError::TextTooLong { chars: 1001 })
        ));
    }

    #[test]
    fn control_characters_are_refused_with_their_position() {
        for (text, code, position) in [
            ("JOIN\n", 0x0A, 5),
            ("JO\tIN", 0x09, 3),
            ("\u{7f}JOIN", 0x7F, 1),
            ("JOIN\u{85}", 0x85, 5),
        ] {
            match wa_me_link("4930901820", text) {
                Err(LinkError::TextControlCharacter {
                    code: got_code,
                    position: got_position,
                }) => assert_eq!((got_code, got_position), (code, position), "{text:?}"),
                other => panic!("{text:?}: {other:?}"),
            }
        }
    }

    #[test]
    fn errors_say_what_to_change() {
        let message = wa_me_link("030 901820", "JOIN").unwrap_err().to_string();
        assert!(message.contains("international form"), "{message}");
        let message = wa_me_link("+49 30", "JOIN").unwrap_err().to_string();
        assert!(message.contains("7 to 15"), "{message}");
        let message = wa_me_link("4930901820", "JOIN\n").unwrap_err().to_string();
        assert!(message.contains("U+000A"), "{message}");
    }

    #[test]
    fn the_prefilled_text_is_the_keyword_alone_by_default() {
        assert_eq!(prefilled_text("JOIN", None), "JOIN");
        assert_eq!(prefilled_text("  JOIN ", None), "JOIN");
    }

    #[test]
    fn an_intro_comes_before_the_keyword_with_one_space() {
        assert_eq!(
            prefilled_text("JOIN", Some("Hi, sign me up for offers")),
            "Hi, sign me up for offers JOIN"
        );
        assert_eq!(prefilled_text("JOIN", Some(" Hi ")), "Hi JOIN");
        assert_eq!(prefilled_text("JOIN", Some("  ")), "JOIN");
    }
}
