//! The prompt builder: dataset record + image -> model input ids.
