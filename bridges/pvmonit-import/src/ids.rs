//! PvMonit's names for people ("Box Internet", "MpttGarage", "Chauffe-eau") to pvbus ids
//! (topic levels: a-z, 0-9 and `_`, at most 64 characters).

/// `MpttGarage` → `mptt_garage`, `Téléphone` → `telephone`, `Box Internet` →
/// `box_internet`; `None` when nothing of the name survives (e.g. only punctuation).
pub fn id_from_name(name: &str) -> Option<String> {
    let mut id = String::new();
    let mut previous_lower = false;
    for c in name.chars() {
        let (folded, was_upper) = fold(c);
        for f in folded.chars() {
            if f.is_ascii_alphanumeric() {
                // A capital after a small letter starts a word (camelCase).
                if was_upper && previous_lower && !id.ends_with('_') {
                    id.push('_');
                }
                id.push(f.to_ascii_lowercase());
                previous_lower = !was_upper;
            } else if !id.is_empty() && !id.ends_with('_') {
                id.push('_');
                previous_lower = false;
            }
        }
    }
    while id.ends_with('_') {
        id.pop();
    }
    id.truncate(64);
    while id.ends_with('_') {
        id.pop();
    }
    (!id.is_empty()).then_some(id)
}

/// The ASCII letters of a (mostly French) character, and whether it was a capital.
fn fold(c: char) -> (&'static str, bool) {
    let lower: char = c.to_lowercase().next().unwrap_or(c);
    let upper = c != lower;
    let folded = match lower {
        'à' | 'â' | 'ä' | 'á' | 'ã' | 'å' => "a",
        'é' | 'è' | 'ê' | 'ë' => "e",
        'î' | 'ï' | 'í' | 'ì' => "i",
        'ô' | 'ö' | 'ó' | 'ò' | 'õ' => "o",
        'ù' | 'û' | 'ü' | 'ú' => "u",
        'ç' => "c",
        'ñ' => "n",
        'ÿ' => "y",
        'œ' => "oe",
        'æ' => "ae",
        'ß' => "ss",
        _ if c.is_ascii_alphanumeric() => {
            // Index into a static table so that the result stays &'static.
            const ASCII: &str = "0123456789abcdefghijklmnopqrstuvwxyz";
            let i = ASCII.find(lower).unwrap_or(0);
            &ASCII[i..=i]
        }
        _ => " ",
    };
    (folded, upper)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_become_ids() {
        let cases = [
            ("MpttGarage", "mptt_garage"),
            ("Box Internet", "box_internet"),
            ("Téléphone", "telephone"),
            (
                "Chargeur outil électroportatif",
                "chargeur_outil_electroportatif",
            ),
            ("Chauffe-eau", "chauffe_eau"),
            ("BMV 712", "bmv_712"),
            ("pompe", "pompe"),
            ("  Cœur  ", "coeur"),
            ("MPPT", "mppt"),
            ("relay3", "relay3"),
        ];
        for (name, id) in cases {
            assert_eq!(id_from_name(name).as_deref(), Some(id), "{name}");
        }
    }

    #[test]
    fn nothing_left_is_none_and_long_names_are_cut() {
        assert_eq!(id_from_name("--- !"), None);
        assert_eq!(id_from_name(""), None);
        let long = id_from_name(&"ab ".repeat(40)).unwrap();
        assert!(long.len() <= 64 && !long.ends_with('_'), "{long}");
    }
}
