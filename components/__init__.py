"""skindualgen library: data, description, generation, quality, downstream evaluation, tracking, tuning."""
