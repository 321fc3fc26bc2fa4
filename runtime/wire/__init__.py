"""The wire contract: subjects and headers, the codec, answers, results, dead letters, the
function spec, and connecting to NATS. Controllers, workers and clients all speak it."""
