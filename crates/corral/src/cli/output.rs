//! Text for people: aligned tables and short value formats.

use corral_client::types::sandbox::SandboxResponse;

/// Columns of `corral sandbox ls`.
pub const SANDBOX_HEADERS: [&str; 7] = ["ID", "NAME", "IMAGE", "STATE", "CPU", "MEM", "CREATED"];

/// One `ls` row.
pub fn sandbox_row(s: &SandboxResponse) -> Vec<String> {
    vec![
        s.id.clone(),
        if s.name.is_empty() {
            "-".to_owned()
        } else {
            s.name.clone()
        },
        s.image.clone(),
        s.state.clone(),
        cpu(s.cpu_millicores),
        format!("{}M", s.memory_mb),
        s.created_at.clone(),
    ]
}

/// Millicores as cores: `1`, `0.5`, `1.25`.
pub fn cpu(millicores: i64) -> String {
    let whole = millicores / 1000;
    let frac = millicores % 1000;
    if frac == 0 {
        whole.to_string()
    } else {
        let digits = format!("{:03}", frac.abs());
        format!("{whole}.{}", digits.trim_end_matches('0'))
    }
}

/// Left-aligned columns separated by two spaces; the last column unpadded.
pub fn table<const N: usize>(headers: [&str; N], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let mut line = |cells: &mut dyn Iterator<Item = &str>| {
        let mut text = String::new();
        for (i, (cell, width)) in cells.zip(&widths).enumerate() {
            if i > 0 {
                text.push_str("  ");
            }
            text.push_str(cell);
            if i + 1 < N {
                text.extend(std::iter::repeat_n(
                    ' ',
                    width.saturating_sub(cell.chars().count()),
                ));
            }
        }
        out.push_str(text.trim_end());
        out.push('\n');
    };
    line(&mut headers.iter().copied());
    for row in rows {
        line(&mut row.iter().map(String::as_str));
    }
    out
}

/// `corral sandbox get`: one field per line.
pub fn sandbox_details(s: &SandboxResponse) -> String {
    let mut out = String::new();
    let mut field = |name: &str, value: &str| {
        out.push_str(&format!("{:<10}{value}\n", format!("{name}:")));
    };
    field("id", &s.id);
    field("name", &s.name);
    field("image", &s.image);
    field("state", &s.state);
    if let Some(error) = &s.error {
        field("error", error);
    }
    field("cpu", &cpu(s.cpu_millicores));
    field("memory", &format!("{} MiB", s.memory_mb));
    field("disk", &format!("{} MiB", s.disk_mb));
    field("pids", &s.pids.to_string());
    let labels = s
        .labels
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(", ");
    field("labels", &labels);
    field("created", &s.created_at);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_shows_cores_without_trailing_zeros() {
        assert_eq!(cpu(1000), "1");
        assert_eq!(cpu(500), "0.5");
        assert_eq!(cpu(1250), "1.25");
        assert_eq!(cpu(100), "0.1");
        assert_eq!(cpu(2001), "2.001");
    }

    #[test]
    fn table_aligns_columns() {
        let rows = vec![
            vec!["a".to_owned(), "long value".to_owned(), "x".to_owned()],
            vec!["bbb".to_owned(), "v".to_owned(), "y".to_owned()],
        ];
        assert_eq!(
            table(["K", "VALUE", "Z"], &rows),
            "K    VALUE       Z\na    long value  x\nbbb  v           y\n"
        );
    }
}
