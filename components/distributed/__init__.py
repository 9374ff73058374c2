"""Work spread over Ray: joining a cluster, the cross-validation trainings on a pool of workers."""
