"""Lightning callbacks: pictures, throughput, gradient variance."""
