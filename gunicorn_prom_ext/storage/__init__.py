"""Where metric values live between a worker writing them and a scrape reading them."""
