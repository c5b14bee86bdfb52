"""What an app runs: audio in, frames (log-mel or the speech embedding), the DRSN, the decision rule, detections out;
files, streams, many streams, the microphone and the Wyoming server."""
