"""What both sides of provisioning speak: requests and answers, CA pinning, workplace binding."""
