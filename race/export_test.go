package race

// SummarizeLatency exposes summarizeLatency to the tests.
var SummarizeLatency = summarizeLatency
