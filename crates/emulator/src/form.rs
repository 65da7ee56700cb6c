//! `application/x-www-form-urlencoded` and query strings, both ways.

/// Decodes percent escapes and `+` (a space); invalid escapes are kept as written.
pub fn decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok();
                match hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                    Some(b) => {
                        out.push(b);
                        i += 2;
                    }
                    None => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Splits `a=1&b=2` into decoded pairs (a key without `=` gets an empty value).
pub fn parse(s: &str) -> Vec<(String, String)> {
    s.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| match p.split_once('=') {
            Some((k, v)) => (decode(k), decode(v)),
            None => (decode(p), String::new()),
        })
        .collect()
}

/// Percent-encodes a query value (keeps unreserved characters and `$ ' : ( ) ,`).
pub fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~$':(),".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        assert_eq!(decode("a+b%20c%2B%zz%4"), "a b c+%zz%4");
        let v = "status eq 'Active' and lastUpdateTime ge 2024-01-01T00:00:00+01:00";
        assert_eq!(decode(&encode(v)), v);
        assert_eq!(
            parse("client_id=x&scope=https%3A%2F%2Fa%2F.default&empty"),
            vec![
                ("client_id".into(), "x".into()),
                ("scope".into(), "https://a/.default".into()),
                ("empty".into(), String::new())
            ]
        );
    }
}
