//! Reading a service's metrics as scraped (Prometheus / OpenMetrics text).

/// The sum of every sample of the metric `name` in `text`, whatever its labels;
/// 0 when it has none. Several scrapes joined into one text sum across instances.
pub fn metric_sum(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|line| {
            line.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with(' ') || rest.starts_with('{'))
        })
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_one_metric_over_its_labels_and_instances() {
        let text = "# TYPE shoal_x_total counter\n\
                    shoal_x_total{status=\"a\"} 2\n\
                    shoal_x_total{status=\"b\"} 3\n\
                    shoal_x_total_other 100\n\
                    shoal_y 7\n\
                    shoal_x_total 1.5\n";
        assert_eq!(metric_sum(text, "shoal_x_total"), 6.5);
        assert_eq!(metric_sum(text, "shoal_y"), 7.0);
        assert_eq!(metric_sum(text, "shoal_z"), 0.0);
    }
}
