//! Markdown tables on stdout, so a run's output pastes into the docs as it is.

pub struct Table {
    header: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new(header: &[&str]) -> Table {
        Table { header: header.iter().map(|h| (*h).to_owned()).collect(), rows: Vec::new() }
    }

    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    /// Orders rows by their first two cells read as numbers (partitions, then nodes): the rows are computed
    /// one cluster size at a time, but read best one partition count at a time.
    pub fn sort_by_first_two_numbers(&mut self) {
        let key = |row: &Vec<String>| -> (u64, u64) {
            let number = |i: usize| row.get(i).and_then(|cell| cell.replace(',', "").parse().ok()).unwrap_or(0);
            (number(0), number(1))
        };
        self.rows.sort_by_key(key);
    }

    pub fn print(&self) {
        let line = |cells: &[String]| format!("| {} |", cells.join(" | "));
        println!("{}", line(&self.header));
        println!("|{}", " --- |".repeat(self.header.len()));
        for row in &self.rows {
            println!("{}", line(row));
        }
        println!();
    }
}

/// A count with thousands separators: 1,000,000.
pub fn count(value: usize) -> String {
    let digits = value.to_string();
    let mut out = String::new();
    for (i, digit) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(digit);
    }
    out
}

/// A rate in sends per second, rounded to a whole number with separators.
pub fn rate(value: f64) -> String {
    count(value.round().max(0.0) as usize)
}

/// A fraction as a percentage with two decimals.
pub fn percent(fraction: f64) -> String {
    format!("{:.2} %", fraction * 100.0)
}

/// A ratio such as max/avg.
pub fn ratio(value: f64) -> String {
    format!("{value:.3}")
}
