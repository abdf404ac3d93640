//! How many SMS a text costs (reference `sms.md` §3). A text in the GSM 7-bit default alphabet
//! fits 160 characters in one SMS and 153 per part when concatenated; characters of the
//! extension table (`€ [ ] { } \ ^ ~ |`, form feed) take two septets (an escape and the
//! character). Any other character switches the whole text to UCS-2: 70 UTF-16 units in one
//! SMS, 67 per part (an emoji outside the BMP takes two). A part never splits an escape
//! sequence or a surrogate pair, as SMSCs split them, so the count is the count billed.

/// How a text is encoded on the wire (`data_coding` 0 or 8).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Encoding {
    Gsm7,
    Ucs2,
}

impl Encoding {
    /// Units (septets or UTF-16 units) in a single, unconcatenated SMS.
    pub fn single(self) -> usize {
        match self {
            Encoding::Gsm7 => 160,
            Encoding::Ucs2 => 70,
        }
    }

    /// Units per part of a concatenated SMS (the rest of 140 bytes holds the UDH).
    pub fn per_part(self) -> usize {
        match self {
            Encoding::Gsm7 => 153,
            Encoding::Ucs2 => 67,
        }
    }
}

/// What a text costs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Segments {
    pub encoding: Encoding,
    /// Septets (GSM-7) or UTF-16 units (UCS-2) of the whole text.
    pub units: usize,
    /// SMS billed (1 for an empty text: an SMS is still sent).
    pub parts: u32,
}

/// The GSM 03.38 default alphabet (one septet each).
pub(crate) const GSM_BASIC: &str = "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?\
¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà";
/// The extension table (an escape septet plus one).
pub(crate) const GSM_EXTENSION: &str = "\u{0C}^{}\\[~]|€";

/// Septets `c` takes in GSM-7, or `None` when it has no GSM-7 form.
fn gsm_width(c: char) -> Option<usize> {
    if GSM_BASIC.contains(c) {
        Some(1)
    } else if GSM_EXTENSION.contains(c) {
        Some(2)
    } else {
        None
    }
}

/// The encoding `text` needs: GSM-7 when every character has a GSM-7 form.
pub fn encoding(text: &str) -> Encoding {
    if text.chars().all(|c| gsm_width(c).is_some()) {
        Encoding::Gsm7
    } else {
        Encoding::Ucs2
    }
}

/// Counts the SMS `text` costs.
pub fn count(text: &str) -> Segments {
    let encoding = encoding(text);
    let width = |c: char| match encoding {
        Encoding::Gsm7 => gsm_width(c).unwrap_or(1),
        Encoding::Ucs2 => c.len_utf16(),
    };
    let units: usize = text.chars().map(width).sum();
    if units <= encoding.single() {
        return Segments {
            encoding,
            units,
            parts: 1,
        };
    }
    // Fill parts greedily; a character that does not fit whole starts the next part.
    let per_part = encoding.per_part();
    let (mut parts, mut used) = (1u32, 0usize);
    for w in text.chars().map(width) {
        if used + w > per_part {
            parts += 1;
            used = 0;
        }
        used += w;
    }
    Segments {
        encoding,
        units,
        parts,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn a_plain_text_of_160_is_one_sms_and_161_is_two() {
        let s = count(&"a".repeat(160));
        assert_eq!((s.encoding, s.units, s.parts), (Encoding::Gsm7, 160, 1));
        assert_eq!(count(&"a".repeat(161)).parts, 2);
        assert_eq!(count(&"a".repeat(306)).parts, 2);
        assert_eq!(count(&"a".repeat(307)).parts, 3);
        assert_eq!(count("").parts, 1);
    }

    #[test]
    fn extension_characters_count_two_and_are_never_split() {
        let s = count("Sneaker -30 € {heute}");
        assert_eq!(s.encoding, Encoding::Gsm7);
        assert_eq!(s.units, 21 + 3);
        assert_eq!(count(&"€".repeat(80)).parts, 1);
        assert_eq!(count(&"€".repeat(81)).parts, 2);
        // 152 septets then a € (2): the € does not fit in the first part's last septet.
        let text = format!("{}€{}", "a".repeat(152), "a".repeat(9));
        assert_eq!(count(&text).units, 163);
        assert_eq!(count(&text).parts, 2);
        let text = format!("{}€{}", "a".repeat(152), "a".repeat(152));
        assert_eq!(
            count(&text).parts,
            3,
            "153 + 153 would fit only if the € were split"
        );
    }

    #[test]
    fn german_umlauts_stay_gsm_but_other_accents_and_emoji_switch_to_ucs2() {
        assert_eq!(encoding("Grüße aus München, Straße"), Encoding::Gsm7);
        assert_eq!(encoding("Ça coûte 5 €"), Encoding::Ucs2); // û is not GSM
        assert_eq!(encoding("Привет"), Encoding::Ucs2);
        let s = count("Sale 👟");
        assert_eq!((s.encoding, s.units, s.parts), (Encoding::Ucs2, 7, 1));
        assert_eq!(count(&"ж".repeat(70)).parts, 1);
        assert_eq!(count(&"ж".repeat(71)).parts, 2);
        assert_eq!(count(&"ж".repeat(134)).parts, 2);
        assert_eq!(count(&"ж".repeat(135)).parts, 3);
    }

    #[test]
    fn a_surrogate_pair_is_never_split_across_parts() {
        // 66 units, then an emoji (2 units) that cannot take the 67th alone.
        let text = format!("{}👟{}", "ж".repeat(66), "ж".repeat(66));
        assert_eq!(count(&text).units, 134);
        assert_eq!(count(&text).parts, 3);
    }

    #[test]
    fn the_design_example_is_one_gsm_sms() {
        let text = "ACME: Sneaker -30 % nur heute, Anna: https://acme.example/s STOP: Antwort STOP";
        let s = count(text);
        assert_eq!((s.encoding, s.parts), (Encoding::Gsm7, 1));
    }

    proptest! {
        #[test]
        fn parts_are_enough_and_never_too_many(text in "[a-z€ж👟 ]{0,400}") {
            let s = count(&text);
            let (single, per) = (s.encoding.single(), s.encoding.per_part());
            if s.units <= single {
                prop_assert_eq!(s.parts, 1);
            } else {
                // At least the plain division, at most one more per unsplittable character.
                let min = s.units.div_ceil(per) as u32;
                prop_assert!(s.parts >= min);
                prop_assert!(s.parts <= min + (s.units / per) as u32);
            }
        }
    }
}
