# Warm per-fit timing of lme4::lmer, called by benchmarks/bench_single.py.
#
#   Rscript benchmarks/lme4_timing.R DATA.csv FORMULA REPEATS [REML|ML]
#
# Reads the CSV once, fits once untimed (warm-up: loads lazily-loaded code and
# fills caches), then times REPEATS calls of `lmer(FORMULA, data)` with
# Sys.time() (microsecond wall clock; system.time() rounds to milliseconds).
# Prints one line of JSON: the per-fit times in seconds, their median, the
# fitted criterion (REML criterion or ML deviance, i.e. -2 log-likelihood) and
# the R, lme4 and Matrix versions.

suppressPackageStartupMessages(library(lme4))

args <- commandArgs(trailingOnly = TRUE)
if (length(args) < 3) {
  stop("usage: lme4_timing.R DATA.csv FORMULA REPEATS [REML|ML]")
}
data <- read.csv(args[[1]])
form <- as.formula(args[[2]])
repeats <- as.integer(args[[3]])
reml <- length(args) < 4 || toupper(args[[4]]) == "REML"

fit_once <- function() lmer(form, data = data, REML = reml)

timed_fit <- function() {
  start <- Sys.time()
  fit_once()
  as.numeric(difftime(Sys.time(), start, units = "secs"))
}

fit <- fit_once()
times <- vapply(seq_len(repeats), function(i) timed_fit(), numeric(1))
criterion <- if (reml) REMLcrit(fit) else deviance(fit)

json_string <- function(x) sprintf("\"%s\"", x)
cat(sprintf(
  "{\"times\": [%s], \"median\": %.9g, \"criterion\": %.17g, \"R\": %s, \"lme4\": %s, \"Matrix\": %s}\n",
  paste(sprintf("%.9g", times), collapse = ", "), median(times), criterion,
  json_string(paste(R.version$major, R.version$minor, sep = ".")),
  json_string(as.character(packageVersion("lme4"))),
  json_string(as.character(packageVersion("Matrix")))
))
