//! Click-to-chat opt-in links: `https://wa.me/<number>?text=<keyword>` opens a chat with the
//! business with the opt-in keyword already typed, so the customer's first message is the
//! opt-in; and the link's QR codes, SVG for print and PNG for screens and mail.

use std::io::Write;
use std::path::{Path, PathBuf};

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use qrcode::render::{Canvas, Pixel, svg};
use qrcode::types::{Color, QrError};
use qrcode::{EcLevel, QrCode};

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

/// Smallest side of a QR image in pixels, so that even a small code (a short link needs only
/// 25 to 33 modules) is big enough to scan from a screen at 100 % zoom.
const MIN_QR_SIDE_PX: u32 = 256;

/// Fewest pixels per module: below that, viewers that scale the image blur module edges and
/// scanners misread.
const MIN_MODULE_PX: u32 = 4;

/// The quiet zone `qrcode`'s renderer draws around a (non-micro) QR code, in modules; the
/// size arithmetic needs it, the renderer draws it.
const QUIET_ZONE_MODULES: u32 = 4;

/// Error correction M restores up to 15 % of the code: enough for a crease, a smudge or a glare
/// on a poster, while the code stays smaller than at Q or H.
const EC_LEVEL: EcLevel = EcLevel::M;

/// Why a link or its QR code could not be made; each message says what to change.
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
    #[error(
        "the link is {bytes} bytes, more than a QR code holds at error correction M: shorten \
         the prefilled text (each non-ASCII character takes 6 to 12 bytes once percent-encoded)"
    )]
    TooLongForQr { bytes: usize },
    #[error(
        "the file name stem {stem:?} is empty or has a path separator: give a plain name such \
         as spring-sale; the directory is a separate argument"
    )]
    Stem { stem: String },
    #[error("the output directory {} does not exist: create it first", dir.display())]
    NoSuchDir { dir: PathBuf },
    #[error(
        "could not write {}: {source}; check that the directory is writable and has space",
        path.display()
    )]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the QR code could not be encoded ({0}); this is a bug in herald, please report it")]
    QrEncode(#[source] QrError),
    #[error(
        "the QR code could not be written as PNG ({0}); this is a bug in herald, please report it"
    )]
    PngEncode(#[from] png::EncodingError),
}

/// The click-to-chat link that opens a chat with `business_number` with `text` already typed:
/// `https://wa.me/4930901820?text=JOIN`.
///
/// `business_number` is the business's display number in any common form (`+49 30 901820`,
/// `+49-30-901820`, `4930901820`); only its digits go into the link. `text` goes in as given
/// (not trimmed), percent-encoded with the `percent-encoding` crate (the one `url` is built on)
/// for RFC 3986's unreserved set. `url`'s own query serialiser is not used: it follows HTML
/// form encoding, which writes a space as `+` and escapes `~`.
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

/// The link's QR code as an SVG document: black modules on white, with the standard quiet zone
/// of four modules, at least 256 px a side. Drawn by the `qrcode` crate's SVG renderer.
pub fn qr_svg(link: &str) -> Result<String, LinkError> {
    let code = qr_code(link)?;
    let module_px = module_px(&code);
    Ok(code
        .render::<svg::Color>()
        .module_dimensions(module_px, module_px)
        .build())
}

/// The link's QR code as an 8-bit grayscale PNG: the same image as [`qr_svg`], at least 4 px
/// per module. The `qrcode` crate lays out the pixels and the `png` crate encodes them, which
/// spares herald the whole `image` crate.
pub fn qr_png(link: &str) -> Result<Vec<u8>, LinkError> {
    let code = qr_code(link)?;
    let module_px = module_px(&code);
    let image = code
        .render::<Gray>()
        .module_dimensions(module_px, module_px)
        .build();
    let mut png = Vec::new();
    let mut encoder = png::Encoder::new(&mut png, image.side, image.side);
    encoder.set_color(png::ColorType::Grayscale);
    encoder.set_depth(png::BitDepth::Eight);
    let mut writer = encoder.write_header()?;
    writer.write_image_data(&image.pixels)?;
    writer.finish()?;
    Ok(png)
}

/// Writes the link's QR code as `<stem>.png` and `<stem>.svg` into `dir`, which must exist,
/// and returns their paths, PNG first. Both images are drawn before either file is written;
/// each file is written under a temporary name in `dir` and renamed over `<stem>.*`, so a
/// reader (a web server, a print job) sees the old file or the new one, never half of one.
pub fn write_qr_files(link: &str, dir: &Path, stem: &str) -> Result<(PathBuf, PathBuf), LinkError> {
    // Both separators on every platform: a stem is a name, never a path, wherever it runs.
    if stem.trim().is_empty() || stem.contains(['/', '\\']) {
        return Err(LinkError::Stem {
            stem: stem.to_owned(),
        });
    }
    if !dir.is_dir() {
        return Err(LinkError::NoSuchDir {
            dir: dir.to_owned(),
        });
    }
    let png = qr_png(link)?;
    let svg = qr_svg(link)?;
    let png_path = dir.join(format!("{stem}.png"));
    let svg_path = dir.join(format!("{stem}.svg"));
    write_atomically(dir, &png_path, &png)?;
    write_atomically(dir, &svg_path, svg.as_bytes())?;
    Ok((png_path, svg_path))
}

/// Writes `bytes` to a temporary file in `dir`, flushes it to disk and renames it to `path`,
/// so a crash leaves either the old file or the whole new one.
fn write_atomically(dir: &Path, path: &Path, bytes: &[u8]) -> Result<(), LinkError> {
    let write = || -> std::io::Result<()> {
        let mut builder = tempfile::Builder::new();
        // tempfile creates its files owner-only (0600); these are meant to be served and
        // shared, so they get the mode a plain File::create would give (0666 less the umask).
        #[cfg(unix)]
        builder.permissions(std::os::unix::fs::PermissionsExt::from_mode(0o666));
        let mut file = builder.tempfile_in(dir)?;
        file.write_all(bytes)?;
        file.as_file().sync_all()?;
        file.persist(path)?;
        Ok(())
    };
    write().map_err(|source| LinkError::Write {
        path: path.to_owned(),
        source,
    })
}

fn qr_code(link: &str) -> Result<QrCode, LinkError> {
    QrCode::with_error_correction_level(link, EC_LEVEL).map_err(|e| match e {
        QrError::DataTooLong => LinkError::TooLongForQr { bytes: link.len() },
        other => LinkError::QrEncode(other),
    })
}

/// Pixels per module so that the image, quiet zone included, is at least [`MIN_QR_SIDE_PX`]
/// a side and no module is smaller than [`MIN_MODULE_PX`].
fn module_px(code: &QrCode) -> u32 {
    let side_modules = u32::try_from(code.width()).expect("a QR code is at most 177 modules")
        + 2 * QUIET_ZONE_MODULES;
    MIN_QR_SIDE_PX.div_ceil(side_modules).max(MIN_MODULE_PX)
}

/// A grayscale pixel, so that `qrcode`'s renderer, which places the quiet zone and scales the
/// modules for the SVG, lays out the PNG's pixels the same way.
#[derive(Clone, Copy)]
struct Gray(u8);

/// A square 8-bit grayscale image, row by row.
struct GrayImage {
    side: u32,
    pixels: Vec<u8>,
    dark: u8,
}

impl Pixel for Gray {
    type Image = GrayImage;
    type Canvas = GrayImage;

    fn default_color(color: Color) -> Self {
        Gray(color.select(0, 255))
    }
}

impl Canvas for GrayImage {
    type Pixel = Gray;
    type Image = GrayImage;

    fn new(width: u32, height: u32, dark: Gray, light: Gray) -> Self {
        debug_assert_eq!(width, height, "module dimensions are square");
        GrayImage {
            side: width,
            pixels: vec![light.0; width as usize * height as usize],
            dark: dark.0,
        }
    }

    fn draw_dark_pixel(&mut self, x: u32, y: u32) {
        self.pixels[y as usize * self.side as usize + x as usize] = self.dark;
    }

    fn into_image(self) -> GrayImage {
        self
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

    const LINK: &str = "https://wa.me/4930901820?text=Gr%C3%BC%C3%9Fe%20%26%20Angebote%3F%20JOIN";

    #[test]
    fn the_png_reads_back_as_the_link_at_error_correction_m() {
        let (side, pixels) = decode_png(&qr_png(LINK).unwrap());
        let (meta, content) = read_qr(side, &pixels);
        assert_eq!(content, LINK);
        assert_eq!(meta.ecc_level, 0, "format bits 00 are level M");
    }

    #[test]
    fn the_png_has_a_white_quiet_zone_and_at_least_four_pixels_a_module() {
        let modules = qr_code(LINK).unwrap().width() + 8;
        let (side, pixels) = decode_png(&qr_png(LINK).unwrap());
        assert!(side >= 256, "{side} px");
        assert_eq!(side % modules, 0, "{side} px for {modules} modules");
        let module_px = side / modules;
        assert!(module_px >= 4, "{module_px} px a module");
        let quiet = 4 * module_px;
        for y in 0..side {
            for x in 0..side {
                let inside =
                    (quiet..side - quiet).contains(&x) && (quiet..side - quiet).contains(&y);
                if !inside {
                    assert_eq!(pixels[y * side + x], 255, "quiet zone pixel ({x}, {y})");
                }
            }
        }
    }

    #[test]
    fn a_large_code_still_gets_four_pixels_a_module() {
        // Version 40 is 177 modules: 256 px would give it only one or two pixels each.
        let link = wa_me_link("4930901820", &"x".repeat(1000)).unwrap();
        let modules = qr_code(&link).unwrap().width() + 8;
        let (side, pixels) = decode_png(&qr_png(&link).unwrap());
        assert_eq!(side, modules * 4);
        assert_eq!(read_qr(side, &pixels).1, link);
    }

    #[test]
    fn the_svg_rasterises_to_a_code_that_reads_back_as_the_link() {
        let svg = qr_svg(LINK).unwrap();
        assert!(svg.starts_with("<?xml") && svg.ends_with("</svg>"), "{svg}");
        let modules = qr_code(LINK).unwrap().width() + 8;
        let (side, pixels) = rasterise_svg(&svg);
        assert!(side >= 256, "{side} px");
        assert_eq!(side % modules, 0, "{side} px for {modules} modules");
        assert_eq!(read_qr(side, &pixels).1, LINK);
    }

    #[test]
    fn svg_and_png_draw_the_same_pixels() {
        let (svg_side, svg_pixels) = rasterise_svg(&qr_svg(LINK).unwrap());
        let (png_side, png_pixels) = decode_png(&qr_png(LINK).unwrap());
        assert_eq!(svg_side, png_side);
        assert!(svg_pixels == png_pixels, "the images differ");
    }

    #[test]
    fn a_link_too_long_for_a_qr_code_is_refused_with_its_length() {
        // 1,000 umlauts are a valid text, but 6,000 bytes once percent-encoded.
        let link = wa_me_link("4930901820", &"ü".repeat(1000)).unwrap();
        for result in [qr_png(&link).map(drop), qr_svg(&link).map(drop)] {
            match result {
                Err(LinkError::TooLongForQr { bytes }) => assert_eq!(bytes, link.len()),
                other => panic!("{other:?}"),
            }
        }
    }

    #[test]
    fn both_files_are_written_under_the_stem_and_nothing_else_is_left() {
        let dir = tempfile::tempdir().unwrap();
        let (png, svg) = write_qr_files(LINK, dir.path(), "spring-sale").unwrap();
        assert_eq!(png, dir.path().join("spring-sale.png"));
        assert_eq!(svg, dir.path().join("spring-sale.svg"));
        assert_eq!(std::fs::read(&png).unwrap(), qr_png(LINK).unwrap());
        assert_eq!(
            std::fs::read_to_string(&svg).unwrap(),
            qr_svg(LINK).unwrap()
        );
        assert_eq!(files_in(dir.path()), ["spring-sale.png", "spring-sale.svg"]);
    }

    #[test]
    fn writing_again_replaces_the_files() {
        let dir = tempfile::tempdir().unwrap();
        let other = wa_me_link("4930901820", "STOP").unwrap();
        write_qr_files(&other, dir.path(), "qr").unwrap();
        let (png, _) = write_qr_files(LINK, dir.path(), "qr").unwrap();
        let (side, pixels) = decode_png(&std::fs::read(png).unwrap());
        assert_eq!(read_qr(side, &pixels).1, LINK);
        assert_eq!(files_in(dir.path()), ["qr.png", "qr.svg"]);
    }

    #[cfg(unix)]
    #[test]
    fn the_files_get_the_mode_a_plain_create_gives() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let (png, svg) = write_qr_files(LINK, dir.path(), "qr").unwrap();
        let plain = dir.path().join("plain");
        std::fs::File::create(&plain).unwrap();
        let mode = |path: &Path| format!("{:o}", path.metadata().unwrap().permissions().mode());
        assert_eq!(mode(&png), mode(&plain));
        assert_eq!(mode(&svg), mode(&plain));
    }

    #[test]
    fn a_stem_that_is_empty_or_a_path_is_refused_and_nothing_is_written() {
        let parent = tempfile::tempdir().unwrap();
        let dir = parent.path().join("out");
        std::fs::create_dir(&dir).unwrap();
        for stem in ["", "  ", "a/b", "/qr", "..\\qr", "../qr"] {
            match write_qr_files(LINK, &dir, stem) {
                Err(LinkError::Stem { stem: got }) => assert_eq!(got, stem),
                other => panic!("{stem:?}: {other:?}"),
            }
        }
        assert!(files_in(&dir).is_empty());
        assert_eq!(files_in(parent.path()), ["out"]);
    }

    #[test]
    fn a_missing_directory_is_refused_not_created() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("qr-codes");
        match write_qr_files(LINK, &missing, "qr") {
            Err(LinkError::NoSuchDir { dir }) => assert_eq!(dir, missing),
            other => panic!("{other:?}"),
        }
        assert!(!missing.exists());
        let a_file = dir.path().join("a-file");
        std::fs::write(&a_file, "").unwrap();
        assert!(matches!(
            write_qr_files(LINK, &a_file, "qr"),
            Err(LinkError::NoSuchDir { .. })
        ));
    }

    #[test]
    fn a_link_too_long_for_a_qr_code_writes_no_file() {
        let dir = tempfile::tempdir().unwrap();
        let link = wa_me_link("4930901820", &"ü".repeat(1000)).unwrap();
        assert!(matches!(
            write_qr_files(&link, dir.path(), "qr"),
            Err(LinkError::TooLongForQr { .. })
        ));
        assert!(files_in(dir.path()).is_empty());
    }

    /// Longest link any QR code holds at level M, were it all in byte mode (version 40); the
    /// encoder may pack more, but never refuses less.
    const QR_BYTE_CAPACITY_M: usize = 2331;

    /// One to 200 printable characters, half of them ASCII (so URL delimiters like `&`, `#`,
    /// `+`, `%` and spaces come up often) and half from anywhere in Unicode.
    const PRINTABLE_TEXT: &str = "(?:[ -~]|\\PC){1,200}";

    proptest::proptest! {
        #[test]
        fn the_text_query_value_decodes_back_to_the_text(text in PRINTABLE_TEXT) {
            proptest::prop_assume!(!text.trim().is_empty());
            let link = wa_me_link("+49 30 901820", &text).unwrap();
            let url = url::Url::parse(&link).unwrap();
            proptest::prop_assert_eq!(url.host_str(), Some("wa.me"));
            proptest::prop_assert_eq!(url.path(), "/4930901820");
            let pairs: Vec<(String, String)> = url.query_pairs().into_owned().collect();
            proptest::prop_assert_eq!(pairs, vec![("text".to_owned(), text)]);
        }
    }

    proptest::proptest! {
        // Each case draws and reads a QR code of up to version 40: few cases keep it fast.
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(16))]

        #[test]
        fn the_png_reads_back_as_the_link_or_is_refused_as_too_long(text in PRINTABLE_TEXT) {
            proptest::prop_assume!(!text.trim().is_empty());
            let link = wa_me_link("+49 30 901820", &text).unwrap();
            match qr_png(&link) {
                Ok(png) => {
                    let (side, pixels) = decode_png(&png);
                    proptest::prop_assert_eq!(read_qr(side, &pixels).1, link);
                }
                Err(LinkError::TooLongForQr { bytes }) => {
                    proptest::prop_assert!(bytes > QR_BYTE_CAPACITY_M, "{bytes} bytes refused");
                }
                Err(other) => proptest::prop_assert!(false, "{other}"),
            }
        }
    }

    /// The names of the files in `dir`, sorted.
    fn files_in(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|entry| entry.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        names
    }

    /// The pixels of an 8-bit grayscale square PNG, and its side.
    fn decode_png(png: &[u8]) -> (usize, Vec<u8>) {
        let decoder = png::Decoder::new(std::io::Cursor::new(png));
        let mut reader = decoder.read_info().unwrap();
        let mut pixels = vec![0; reader.output_buffer_size().unwrap()];
        let info = reader.next_frame(&mut pixels).unwrap();
        assert_eq!(info.color_type, png::ColorType::Grayscale);
        assert_eq!(info.bit_depth, png::BitDepth::Eight);
        assert_eq!(info.width, info.height, "square");
        pixels.truncate(info.buffer_size());
        (info.width as usize, pixels)
    }

    /// Rasterises the SVG `qrcode` draws: a white `<rect>` behind one black `<path>` whose
    /// subpaths are rectangles, `M{x} {y}h{w}v{h}H{x}V{y}`. Anything else fails the test.
    fn rasterise_svg(svg: &str) -> (usize, Vec<u8>) {
        let attribute = |name: &str| -> usize {
            let start = svg.find(&format!(" {name}=\"")).unwrap() + name.len() + 3;
            svg[start..].split('"').next().unwrap().parse().unwrap()
        };
        let side = attribute("width");
        assert_eq!(attribute("height"), side, "square");
        assert!(svg.contains(&format!(
            r##"<rect x="0" y="0" width="{side}" height="{side}" fill="#fff"/>"##
        )));
        let (_, path) = svg.split_once(r##"<path fill="#000" d=""##).unwrap();
        let (path, rest) = path.split_once('"').unwrap();
        assert_eq!(rest, "/></svg>");
        let mut pixels = vec![255; side * side];
        for rect in path.split('M').skip(1) {
            let number = |s: &str| -> usize { s.parse().unwrap_or_else(|_| panic!("M{rect}")) };
            let (x, rest) = rect.split_once(' ').unwrap();
            let (y, rest) = rest.split_once('h').unwrap();
            let (w, rest) = rest.split_once('v').unwrap();
            let (h, rest) = rest.split_once('H').unwrap();
            let (x_back, y_back) = rest.split_once('V').unwrap();
            let (x, y, w, h) = (number(x), number(y), number(w), number(h));
            assert_eq!((number(x_back), number(y_back)), (x, y), "M{rect} closes");
            for row in y..y + h {
                pixels[row * side + x..row * side + x + w].fill(0);
            }
        }
        (side, pixels)
    }

    /// Finds and decodes the one QR code in a grayscale image, as a phone camera would.
    fn read_qr(side: usize, pixels: &[u8]) -> (rqrr::MetaData, String) {
        let mut image =
            rqrr::PreparedImage::prepare_from_greyscale(side, side, |x, y| pixels[y * side + x]);
        let grids = image.detect_grids();
        assert_eq!(grids.len(), 1, "one QR code in the image");
        grids[0].decode().expect("the QR code decodes")
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
