# Warm timing of a loop of lme4::refit over many responses, called by benchmarks/bench_batch.py.
#
#   Rscript benchmarks/lme4_refit.R DATA.csv FORMULA RESPONSES.csv
#
# Fits FORMULA to DATA once (untimed), then times, with Sys.time(), one loop of
# `refit(fit, Y[, i])` over the columns of RESPONSES.csv (one row per data row).
# Prints one line of JSON: the loop's total seconds, the number of refits, the
# REML criteria of the refits, and the R and lme4 versions.

suppressPackageStartupMessages(library(lme4))

args <- commandArgs(trailingOnly = TRUE)
if (length(args) < 3) stop("usage: lme4_refit.R DATA.csv FORMULA RESPONSES.csv")
data <- read.csv(args[[1]])
fit <- lmer(as.formula(args[[2]]), data = data, REML = TRUE)
Y <- as.matrix(read.csv(args[[3]]))

start <- Sys.time()
criteria <- vapply(seq_len(ncol(Y)), function(i) REMLcrit(refit(fit, Y[, i])), numeric(1))
seconds <- as.numeric(difftime(Sys.time(), start, units = "secs"))

cat(sprintf("{\"seconds\": %.9g, \"fits\": %d, \"criteria\": [%s], \"R\": \"%s\", \"lme4\": \"%s\"}\n",
            seconds, ncol(Y), paste(sprintf("%.17g", criteria), collapse = ", "),
            paste(R.version$major, R.version$minor, sep = "."), as.character(packageVersion("lme4"))))
