/** What kubeadm writes: the cluster admin's kubeconfig, which ferry acts on the cluster with. */
export const ADMIN_CONF = '/etc/kubernetes/admin.conf';
